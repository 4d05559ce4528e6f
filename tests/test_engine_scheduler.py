"""run_jobs against a real RunStore: bounded concurrency, no barriers, dead letters, resume,
lazy sources, progress output."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter

import orjson
import pytest

from engine import metrics
from engine.errors import (
    BadAnswer,
    FatalTeacherError,
    JobFailed,
    RateLimited,
    RetryableError,
    TeacherUnavailable,
    UserInputError,
    failure_kind,
)
from engine.progress import Progress
from engine.records import PathTurn, SignaturePath
from engine.scheduler import one_line_error, run, run_jobs
from engine.store import RunStore, read_records


def _path(i: int) -> SignaturePath:
    return SignaturePath(id=f"path-{i}", kind="single", turns=[PathTurn(functions=["f"])])


def _open(tmp_path, name="run"):
    return RunStore.open(tmp_path / name, config_fingerprint="sched-test")


def _ids(run_dir, kind):
    return [r.id for r in read_records(run_dir, kind)]


@pytest.fixture(autouse=True)
def _fresh_metrics():
    metrics.reset_metrics()
    yield
    metrics.reset_metrics()


async def test_concurrency_is_bounded_and_reached(tmp_path):
    running = peak = 0

    async def job(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert metrics.METRICS.in_flight <= 8
        await asyncio.sleep(0.001 * (i % 5))
        running -= 1
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs(range(200), job, store, item_id=str, stage="t", max_in_flight=8, progress=False)
    assert peak == 8
    assert summary["done"] == 200 and summary["failed"] == 0 and not summary["interrupted"]
    assert metrics.METRICS.items_done == 200 and metrics.METRICS.in_flight == 0
    assert sorted(_ids(tmp_path / "run", "done"), key=int) == [str(i) for i in range(200)]
    assert len(_ids(tmp_path / "run", "paths")) == 200


async def test_slow_item_does_not_block_others(tmp_path):
    finished: list[int] = []

    async def job(i):
        await asyncio.sleep(1.0 if i == 0 else 0.005)
        finished.append(i)
        return [("paths", _path(i))]

    start = time.monotonic()
    with _open(tmp_path) as store:
        await run_jobs(range(60), job, store, item_id=str, stage="t", max_in_flight=4, progress=False)
    wall = time.monotonic() - start
    # With a barrier per batch of 4 the 59 fast items would wait behind item 0's second.
    assert finished[-1] == 0 and sorted(finished[:-1]) == list(range(1, 60))
    assert wall < 1.0 + 0.9, wall


async def test_exceptions_become_dead_letters(tmp_path):
    async def job(i):
        await asyncio.sleep(0)
        if i % 3 == 1:
            raise JobFailed("judge gave up", stage="judge", attempts=3) from BadAnswer("no json", text="I think\nmaybe")
        if i % 3 == 2:
            raise ValueError("broken\nacross lines")
        if i == 3:  # a teacher error whose retries ran out says how often it was tried
            err = BadAnswer("truncated", text="...")
            err.attempts = 4
            raise err
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs(range(30), job, store, item_id=lambda i: f"it-{i}", stage="rollout",
                                 max_in_flight=5, progress=False, item_payload=lambda i: {"n": i})
        assert all(store.is_finished(f"it-{i}") for i in range(30))
    assert (summary["done"], summary["failed"]) == (9, 21)
    assert metrics.METRICS.items_failed == 21
    letters = {d.item_id: d for d in read_records(tmp_path / "run", "dead_letters")}
    assert len(letters) == 21
    assert (letters["it-3"].stage, letters["it-3"].attempts) == ("rollout", 4)
    judge = letters["it-1"]
    assert (judge.stage, judge.attempts, judge.item) == ("judge", 3, {"n": 1})
    assert "judge gave up" in judge.error and "'I think\\nmaybe'" in judge.error
    other = letters["it-2"]
    assert (other.stage, other.attempts) == ("rollout", 1)
    assert other.error == "ValueError: broken across lines"
    assert all("\n" not in d.error for d in letters.values())
    # Dead-lettered items are finished: no done marker, no records.
    assert sorted(_ids(tmp_path / "run", "done")) == sorted(f"it-{i}" for i in range(0, 30, 3) if i != 3)


async def test_resume_skips_finished_items(tmp_path):
    calls = Counter()

    async def job(i):
        calls[i] += 1
        await asyncio.sleep(0)
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        await run_jobs(range(0, 100, 2), job, store, item_id=str, stage="t", max_in_flight=7, progress=False)
    with _open(tmp_path) as store:  # a second process run over the whole stream
        summary = await run_jobs(range(100), job, store, item_id=str, stage="t", max_in_flight=7, progress=False)
    assert (summary["done"], summary["skipped"]) == (50, 50)
    assert set(calls.values()) == {1} and len(calls) == 100
    done = _ids(tmp_path / "run", "done")
    assert len(done) == len(set(done)) == 100


async def test_duplicate_ids_in_the_source_run_once(tmp_path):
    calls = Counter()

    async def job(i):
        calls[i] += 1
        await asyncio.sleep(0.01)
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs([1, 1, 2, 2, 1], job, store, item_id=str, stage="t", max_in_flight=4, progress=False)
    assert calls == {1: 1, 2: 1} and summary["skipped"] == 3


async def test_source_is_pulled_lazily(tmp_path):
    pulled = finished = ahead = 0
    n, limit = 100_000, 16

    def source():
        nonlocal pulled, ahead
        for i in range(n):
            pulled += 1
            ahead = max(ahead, pulled - finished)
            yield i

    async def job(i):
        nonlocal finished
        await asyncio.sleep(0)
        finished += 1
        return [("paths", _path(i))] if i % 1000 == 0 else []

    with _open(tmp_path) as store:
        summary = await run_jobs(source(), job, store, item_id=str, stage="t", max_in_flight=limit, progress=False)
    assert summary["done"] == n and pulled == n
    assert ahead <= limit


async def test_async_source(tmp_path):
    async def source():
        for i in range(50):
            await asyncio.sleep(0)
            yield i

    async def job(i):
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs(source(), job, store, item_id=str, stage="t", max_in_flight=3, progress=False)
    assert summary["done"] == 50


async def test_source_error_finishes_running_items_then_raises(tmp_path):
    def source():
        yield from range(5)
        raise RuntimeError("source broke")

    async def job(i):
        await asyncio.sleep(0.01)
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        with pytest.raises(RuntimeError, match="source broke"):
            await run_jobs(source(), job, store, item_id=str, stage="t", max_in_flight=8, progress=False)
    assert sorted(_ids(tmp_path / "run", "done")) == [str(i) for i in range(5)]


async def test_bad_concurrency_is_a_user_error(tmp_path):
    with _open(tmp_path) as store:
        with pytest.raises(UserInputError, match="max_in_flight=0"):
            await run_jobs([], None, store, item_id=str, stage="t", max_in_flight=0, progress=False)


async def test_summary_and_manifest(tmp_path):
    async def job(i):
        metrics.METRICS.record_usage(10, 5, price_in=1.0, price_out=2.0)
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs(range(10), job, store, item_id=str, stage="gen", total=10, progress=False)
    assert summary["requests"] == 10 and summary["prompt_tokens"] == 100 and summary["completion_tokens"] == 50
    assert summary["cost_usd"] == pytest.approx(10 * (10 * 1.0 + 5 * 2.0) / 1e6)
    import orjson

    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["extra"]["run_jobs:gen"]["done"] == 10
    assert manifest["counts"]["done"] == 10


async def test_plain_progress_lines_when_not_a_tty():
    stream = io.StringIO()
    view = Progress(stage="gen", total=4, stream=stream, log_every_s=0.05)
    view.start()
    metrics.METRICS.items_done += 2
    metrics.METRICS.record_usage(100, 20)
    metrics.METRICS.rate_limited += 1
    await asyncio.sleep(0.12)
    view.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and "\x1b" not in stream.getvalue()
    last = lines[-1]
    assert "[gen] done 2/4" in last and "429s 1" in last and "ETA" in last and "ETA ?" not in last


def test_uvloop_runner_runs_a_coroutine():
    async def which():
        return type(asyncio.get_running_loop()).__module__

    assert run(which()).startswith("uvloop")


def test_one_line_error_truncates():
    text = one_line_error(ValueError("x" * 5000))
    assert len(text) <= 600 and text.endswith("...")


# -- infrastructure failures stay pending; the circuit breaker (issue 11, item 2) ---------------


def _exhausted(err):
    err.attempts = 7  # what engine.retry sets when the budget is spent
    return err


async def test_an_unreachable_teacher_leaves_items_pending_and_trips_the_breaker(tmp_path):
    started = []

    async def job(i):
        started.append(i)
        await asyncio.sleep(0.001)
        raise _exhausted(RetryableError("cannot connect to http://127.0.0.1:9/v1/chat/completions: connection refused"))

    with _open(tmp_path) as store:
        with pytest.raises(TeacherUnavailable) as info:
            await run_jobs(range(100), job, store, item_id=lambda i: f"it-{i}", stage="generate", max_in_flight=4,
                           total=100, progress=False, breaker_after=6)
        assert not any(store.is_finished(f"it-{i}") for i in range(100))
    message = str(info.value)
    assert "\n" not in message and "cannot connect to http://127.0.0.1:9/v1" in message
    assert "6 work items in a row" in message and "nothing was lost" in message and "of 100 work items left pending" in message
    assert len(started) < 20  # stopped early, not after trying every item
    assert _ids(tmp_path / "run", "dead_letters") == [] and _ids(tmp_path / "run", "done") == []
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    summary = manifest["extra"]["run_jobs:generate"]
    assert summary["stopped_by_breaker"] and summary["left_pending_teacher_unavailable"] >= 6 and summary["failed"] == 0


async def test_answers_in_between_reset_the_breaker_and_data_failures_are_dead_letters(tmp_path):
    async def job(i):
        await asyncio.sleep(0)
        if i % 3 == 0:
            raise _exhausted(RetryableError("503 from the teacher", status=503))
        if i % 3 == 1:
            raise JobFailed("not verified after 2 rollouts", stage="verify", attempts=2)
        if i == 5:
            raise FatalTeacherError("answered 400: context too long", status=400)  # this prompt's fault
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        summary = await run_jobs(range(30), job, store, item_id=lambda i: f"it-{i}", stage="generate", max_in_flight=1,
                                 progress=False, breaker_after=2)
        assert [i for i in range(30) if not store.is_finished(f"it-{i}")] == list(range(0, 30, 3))
    assert (summary["done"], summary["failed"], summary["left_pending_teacher_unavailable"]) == (9, 11, 10)
    assert not summary["stopped_by_breaker"]
    letters = {d.item_id: d for d in read_records(tmp_path / "run", "dead_letters")}
    assert sorted(letters) == sorted([f"it-{i}" for i in range(1, 30, 3)] + ["it-5"])
    assert "context too long" in letters["it-5"].error


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refusing_teacher_stops_the_run_at_once(tmp_path, status):
    calls = []

    async def job(i):
        calls.append(i)
        await asyncio.sleep(0.01 if i else 0)
        if i == 0:
            raise FatalTeacherError(f"http://h/v1/chat/completions answered {status}: invalid key ***", status=status)
        await asyncio.sleep(5)  # in flight when the breaker trips: cancelled, left pending
        return [("paths", _path(i))]

    with _open(tmp_path) as store:
        t0 = time.monotonic()
        with pytest.raises(TeacherUnavailable, match=rf"refuses the requests: FatalTeacherError: .*answered {status}.*"
                                                     r"nothing was lost, 50 of 50 work items left pending"):
            await run_jobs(range(50), job, store, item_id=lambda i: f"it-{i}", stage="generate", max_in_flight=8,
                           total=50, progress=False)
        assert time.monotonic() - t0 < 2
        assert not any(store.is_finished(f"it-{i}") for i in range(50))
    assert len(calls) == 8


async def test_breaker_threshold_must_be_positive(tmp_path):
    with _open(tmp_path) as store, pytest.raises(UserInputError, match="breaker_after=0"):
        await run_jobs([], lambda i: None, store, item_id=str, stage="s", progress=False, breaker_after=0)


def test_failure_kinds():
    assert failure_kind(RetryableError("x")) == failure_kind(RateLimited("x")) == "outage"
    assert failure_kind(FatalTeacherError("vllm server exited during start-up")) == "outage"
    assert failure_kind(FatalTeacherError("x", status=401)) == "refused"
    assert failure_kind(FatalTeacherError("x", status=422)) == failure_kind(BadAnswer("x")) == "data"
    wrapped = JobFailed("translate gave up", stage="translate")
    wrapped.__cause__ = RetryableError("timeout")
    assert failure_kind(wrapped) == "outage" and failure_kind(ValueError("bug")) == "data"
