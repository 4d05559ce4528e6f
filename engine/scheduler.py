"""Push a lazy stream of work items through async multi-step jobs, storing each result once.

Each item is an async job (a conversation of many dependent teacher calls). At most
``max_in_flight`` items run at once and a slot is taken *before* the next item is pulled,
so the source is never read more than ``max_in_flight`` items ahead and memory stays flat
however long the stream is. There are no batch barriers: a finished item frees its slot
and the next item starts at once, so one slow conversation never holds up the others.

Every item ends as committed records plus a ``WorkDone`` marker, or as a ``DeadLetter``;
items already finished in the store are skipped, so resuming is just running again.

Only the item's own failures are dead-lettered (an answer that cannot be verified, a prompt the
teacher rejects). When the teacher itself is unreachable or refuses the key
(``engine.errors.failure_kind``), the item is left pending, because a dead letter would make the
next run skip it for good. A circuit breaker then ends the run: at once on a refusal (401/403,
unknown model), after ``breaker_after`` such failures in a row otherwise; ``run_jobs`` writes the
manifest and raises ``TeacherUnavailable`` (the CLI's exit code 3).

SIGINT/SIGTERM: stop admitting, give in-flight items ``grace_s`` to finish, cancel the
rest (they re-run on resume), flush and write the manifest, return the summary with
``"interrupted": true``. A second signal cancels in-flight items at once; a third gets
the default handling (the process dies; the store's resume repairs torn tails).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from engine import metrics
from engine.errors import (
    BadAnswer,
    JobFailed,
    TeacherUnavailable,
    UserInputError,
    failure_kind,
)
from engine.records import DeadLetter, Record

T = TypeVar("T")
R = TypeVar("R")

Job = Callable[[T], Awaitable[list[tuple[str, Record]]]]

# A run of items skipped on resume never awaits anything: yield to the loop this often so
# signals and the progress display still get served.
_YIELD_EVERY = 1024
_ERROR_CHARS = 600
# Infrastructure failures in a row (each after the teacher's own retries) that stop a run: enough
# that a few unlucky items under heavy rate limiting do not, few enough that a dead teacher is
# noticed within one round of in-flight items.
BREAKER_AFTER = 10


def run(main: Coroutine[Any, Any, R]) -> R:
    """Run ``main`` on uvloop when it is installed (faster I/O), plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def one_line_error(exc: BaseException) -> str:
    """``Type: message`` on one line, quoting the model's text when a bad answer was the cause."""
    if isinstance(line := getattr(exc, "one_line", None), str):
        return line  # written where the error happened (a Ray actor: engine.ray_leases), so it reads the same
    parts = [f"{type(exc).__name__}: {exc}"]
    # ``raise ... from None`` means the context adds nothing (an error already rephrased for users).
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and not isinstance(exc, BadAnswer):
        parts.append(f"caused by {type(cause).__name__}: {cause}")
    bad = exc if isinstance(exc, BadAnswer) else cause if isinstance(cause, BadAnswer) else None
    if bad is not None and bad.text:
        parts.append(f"model text: {bad.text[:200]!r}")
    text = " | ".join(parts).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


class _Runner:
    """State of one ``run_jobs`` call; split out so signal handlers can reach it."""

    def __init__(self, job: Job, store: Any, *, item_id: Callable[[Any], str], stage: str, max_in_flight: int,
                 item_payload: Callable[[Any], Any] | None, grace_s: float, breaker_after: int):
        self.job, self.store, self.item_id, self.stage = job, store, item_id, stage
        self.item_payload, self.grace_s, self.breaker_after = item_payload, grace_s, breaker_after
        self.slots = asyncio.Semaphore(max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.running_ids: set[str] = set()
        self.done = self.failed = self.skipped = self.cancelled = 0
        self.outages = 0  # items left pending because the teacher was unavailable
        self.outages_in_a_row = 0
        self.last_outage = ""
        self.tripped: str | None = None  # "refused" or "outage" once the breaker stopped the run
        self.signals = 0
        self.fatal: BaseException | None = None
        self.feeder: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None

    # -- admission -------------------------------------------------------------------------

    async def feed(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        if isinstance(items, AsyncIterable):
            source = aiter(items)
            try:
                while True:
                    await self.slots.acquire()
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        self.slots.release()
                        return
                    await self._admit(item)
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            iterator = iter(items)
            while True:
                await self.slots.acquire()
                try:
                    item = next(iterator)
                except StopIteration:
                    self.slots.release()
                    return
                await self._admit(item)

    async def _admit(self, item: Any) -> None:
        """Start ``item`` in the slot already taken for it, or give the slot back if it is done."""
        iid = self.item_id(item)
        if iid in self.running_ids or self.store.is_finished(iid):
            self.slots.release()
            self.skipped += 1
            metrics.METRICS.items_skipped += 1
            if self.skipped % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            return
        self.running_ids.add(iid)
        task = asyncio.create_task(self._one(item, iid))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- one item --------------------------------------------------------------------------

    async def _one(self, item: Any, iid: str) -> None:
        m = metrics.METRICS
        m.in_flight += 1
        try:
            try:
                records = await self.job(item)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            except Exception as exc:  # noqa: BLE001 - every job failure is a dead letter or left pending
                kind = failure_kind(exc)
                if kind == "data":
                    self.outages_in_a_row = 0  # the teacher answered: it is up
                    self._dead_letter(item, iid, exc)
                else:
                    self._left_pending(exc, kind)
            else:
                self.outages_in_a_row = 0
                if self._store(lambda: self.store.commit(iid, records)):
                    self.done += 1
                    m.items_done += 1
        finally:
            m.in_flight -= 1
            self.running_ids.discard(iid)
            self.slots.release()

    def _dead_letter(self, item: Any, iid: str, exc: Exception) -> None:
        payload = None
        if self.item_payload is not None:
            try:
                payload = self.item_payload(item)
            except Exception as payload_exc:  # noqa: BLE001 - the dead letter matters more than its payload
                payload = {"unavailable": one_line_error(payload_exc)}
        stage = exc.stage if isinstance(exc, JobFailed) else self.stage
        # Teacher errors that used up engine.retry's budget carry how often they were tried.
        attempts = getattr(exc, "attempts", None)
        attempts = attempts if isinstance(attempts, int) and attempts > 0 else 1
        dl = DeadLetter(id=iid, item_id=iid, stage=stage, error=one_line_error(exc), attempts=attempts, item=payload)
        if self._store(lambda: self.store.dead_letter(dl)):
            self.failed += 1
            metrics.METRICS.items_failed += 1

    def _left_pending(self, exc: Exception, kind: str) -> None:
        """Nothing is stored for the item, so the next run does it again; trip the breaker when due."""
        self.outages += 1
        self.outages_in_a_row += 1
        self.last_outage = one_line_error(exc)
        if self.tripped is None and (kind == "refused" or self.outages_in_a_row >= self.breaker_after):
            self.tripped = kind
            self.stop(now=True)  # the items in flight would fail the same way; they stay pending too

    def _store(self, write: Callable[[], None]) -> bool:
        """A store failure (disk full, I/O error) is not the item's fault: stop the whole run.
        Not re-raised here (a task's unretrieved exception would be logged once per item);
        ``run_jobs`` raises it once the run has wound down."""
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - kept in self.fatal and raised by run_jobs
            if self.fatal is None:
                self.fatal = exc
                self.stop(now=True)
            return False
        return True

    def breaker_message(self, total: int | None) -> str:
        if self.tripped == "refused":
            what, fix = "the teacher refuses the requests", "fix the key or the model name"
        else:
            what, fix = f"the teacher is unavailable ({self.outages_in_a_row} work items in a row failed after every retry)", "fix the teacher"
        if total is not None:
            left = f"{max(0, total - self.skipped - self.done - self.failed)} of {total} work items left pending"
        else:
            left = f"{self.outages + self.cancelled} work items and the rest of the source left pending"
        return f"{what}: {self.last_outage}; nothing was lost, {left}; {fix}, then rerun the same command to resume"

    # -- stopping --------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop(now=False)
        elif self.signals == 2:
            self.stop(now=True)
        else:
            _restore_default_signals()
            signal.raise_signal(signum)

    def stop(self, *, now: bool) -> None:
        if self.feeder is not None and not self.feeder.done():
            self.feeder.cancel()
        if now:
            self._cancel_in_flight()
        elif self._grace_timer is None:
            self._grace_timer = asyncio.get_running_loop().call_later(self.grace_s, self._cancel_in_flight)

    def _cancel_in_flight(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._grace_timer is not None:
            self._grace_timer.cancel()


def _restore_default_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def _install_signals(runner: _Runner) -> bool:
    loop = asyncio.get_running_loop()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.on_signal, sig)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not the main thread (or no signal support): the caller's own handling applies.
        return False
    return True


async def run_jobs(
    items: Iterable[T] | AsyncIterable[T],
    job: Callable[[T], Awaitable[list[tuple[str, Record]]]],
    store: Any,
    *,
    item_id: Callable[[T], str],
    stage: str,
    max_in_flight: int = 64,
    total: int | None = None,
    progress: bool = True,
    item_payload: Callable[[T], Any] | None = None,
    grace_s: float = 30.0,
    handle_signals: bool = True,
    breaker_after: int = BREAKER_AFTER,
) -> dict[str, Any]:
    """Run ``job`` over every unfinished item of ``items``; return a JSON-able summary.

    ``store`` is an ``engine.store.RunStore``. ``grace_s`` is how long in-flight items may
    finish after the first SIGINT/SIGTERM. ``handle_signals=False`` leaves signal handling to
    the caller (e.g. when several ``run_jobs`` share one process-level handler). ``breaker_after``
    is how many infrastructure failures in a row stop the run (a refusal stops it at once).
    """
    if max_in_flight < 1:
        raise UserInputError(f"max_in_flight={max_in_flight} must be at least 1; pass a positive concurrency")
    if breaker_after < 1:
        raise UserInputError(f"breaker_after={breaker_after} must be at least 1; pass how many failures in a row stop the run")
    runner = _Runner(job, store, item_id=item_id, stage=stage, max_in_flight=max_in_flight,
                     item_payload=item_payload, grace_s=grace_s, breaker_after=breaker_after)
    started = time.monotonic()
    installed = handle_signals and _install_signals(runner)
    display = None
    if progress:
        from engine.progress import Progress

        display = Progress(stage=stage, total=total)
        display.start()
    source_error: BaseException | None = None
    try:
        runner.feeder = asyncio.create_task(runner.feed(items))
        try:
            await runner.feeder
        except asyncio.CancelledError:
            if not runner.signals and runner.fatal is None and runner.tripped is None:
                raise  # cancelled from outside, not by our own stop
        except Exception as exc:
            source_error = exc  # the work source itself broke: finish what is running, then raise
        await runner.drain()
    finally:
        if runner.tasks:  # outer cancellation: do not leave orphan jobs behind
            runner._cancel_in_flight()
            await asyncio.gather(*runner.tasks, return_exceptions=True)
        if installed:
            _restore_default_signals()
        if display is not None:
            display.stop()
        summary = _summary(runner, stage, started, total)
        try:
            store.flush()
            store.write_manifest({f"run_jobs:{stage}": summary})
        except Exception:
            if runner.fatal is None:
                raise
    if runner.fatal is not None:
        raise runner.fatal
    if runner.tripped is not None:
        raise TeacherUnavailable(runner.breaker_message(total))
    if source_error is not None:
        raise source_error
    return summary


def _summary(runner: _Runner, stage: str, started: float, total: int | None) -> dict[str, Any]:
    wall = max(time.monotonic() - started, 1e-9)
    m = metrics.METRICS.summary()
    return {
        "stage": stage,
        "done": runner.done,
        "failed": runner.failed,
        "skipped": runner.skipped,
        "cancelled": runner.cancelled,
        "left_pending_teacher_unavailable": runner.outages,
        "total": total,
        "interrupted": bool(runner.signals),
        "stopped_by_breaker": runner.tripped is not None,
        "wall_s": round(wall, 3),
        "items_per_s": round((runner.done + runner.failed) / wall, 3),
        "requests": m["requests"],
        "prompt_tokens": m["prompt_tokens"],
        "completion_tokens": m["completion_tokens"],
        "rate_limited": m["rate_limited"],
        "retries": m["retries"],
        "cost_usd": m["cost_usd"],
    }
