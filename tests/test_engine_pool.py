"""Teacher pools (issue 15, item 1) against real loopback simulator servers: a run whose pool
loses one of its three endpoints mid-run still finishes every item; a dead endpoint is taken
out and probed back in once it serves again; routing follows each member's capacity; pool
specs and TOML endpoint tables build members with their own limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from engine import metrics
from engine.errors import RetryableError, UserInputError
from engine.records import Message, Trajectory
from engine.scheduler import run_jobs
from engine.sim_server import serve_sim
from engine.store import RunStore, read_records
from engine.teachers import make_teacher
from engine.teachers.pool import PoolTeacher
from engine.teachers.sim import SimTeacher


@pytest.fixture(autouse=True)
def _fresh_metrics():
    metrics.reset_metrics()


def user(text: str) -> Message:
    return Message(role="user", content=text)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pool_of(urls: list[str], **options) -> PoolTeacher:
    pool_opts = {k: options.pop(k) for k in ("eject_after", "probe_s", "max_probe_s") if k in options}
    spec = "pool:" + ",".join(f"openai:sim@{u}" for u in urls)
    return make_teacher({"spec": spec, "backoff_s": 0.01, "options": pool_opts, **options})


async def test_run_finishes_when_one_of_three_endpoints_dies_mid_run(tmp_path: Path):
    n = 300
    async with contextlib.AsyncExitStack() as keep, contextlib.AsyncExitStack() as doomed:
        urls = [await keep.enter_async_context(serve_sim(seed=i, latency_ms=5)) for i in range(2)]
        urls.append(await doomed.enter_async_context(serve_sim(seed=2, latency_ms=5)))
        pool = pool_of(urls, max_concurrency=8, eject_after=2, probe_s=60.0)
        dying = pool.members[2]

        async def job(i: int) -> list[tuple[str, Trajectory]]:
            messages = [user(f"Summarise item {i}.")]
            answer = await pool.chat(messages, max_tokens=16)
            return [("trajectories", Trajectory(id=f"t{i}", episode_id=f"e{i}", polarity="positive", tools=[],
                                                messages=messages + [answer.message], teacher=pool.name))]

        async def kill_third_endpoint() -> None:
            while dying.served < 30:  # it carried its share of the run so far
                await asyncio.sleep(0.005)
            await doomed.aclose()

        killer = asyncio.create_task(kill_third_endpoint())
        try:
            with RunStore.open(tmp_path / "run", config_fingerprint="pool") as store:
                summary = await run_jobs(range(n), job, store, item_id=lambda i: f"item-{i}", stage="pool",
                                         max_in_flight=24, progress=False, handle_signals=False)
            await asyncio.wait_for(killer, 10)
        finally:
            killer.cancel()
            await pool.aclose()
    assert summary["done"] == n and summary["failed"] == 0, summary
    assert sorted(int(t.id[1:]) for t in read_records(tmp_path / "run", "trajectories")) == list(range(n))
    assert not list(read_records(tmp_path / "run", "dead_letters"))
    stats = pool.snapshot()
    assert stats[2]["ejections"] == 1 and stats[2]["out"] and stats[2]["failed"] >= 2, stats
    assert 30 <= stats[2]["served"] < n // 2, stats  # it took work until it died, none after
    assert stats[0]["served"] + stats[1]["served"] + stats[2]["served"] == n
    assert min(stats[0]["served"], stats[1]["served"]) > n // 4, stats  # the survivors shared the rest


async def test_dead_endpoint_is_taken_out_then_probed_back_in():
    async with serve_sim(seed=0) as live:
        port = closed_port()
        pool = pool_of([live, f"http://127.0.0.1:{port}/v1"], eject_after=2, probe_s=0.2, max_concurrency=4)
        try:
            # Sequential requests alternate between equally idle members: the dead one fails twice, then is out.
            for i in range(8):
                assert (await pool.chat([user(f"q{i}")], max_tokens=8)).message.role == "assistant"
            dead = pool.snapshot()[1]
            assert dead["out"] and dead["ejections"] == 1 and dead["failed"] == 2 and dead["served"] == 0
            assert pool.snapshot()[0]["served"] == 8
            async with serve_sim(seed=1, port=port):  # the endpoint comes back on its address
                await asyncio.sleep(0.25)
                for i in range(6):
                    await pool.chat([user(f"r{i}")], max_tokens=8)
                back = pool.snapshot()[1]
                assert not back["out"] and back["served"] >= 3, back  # the probe succeeded, then it shared the load
        finally:
            await pool.aclose()


async def test_failed_probe_keeps_the_endpoint_out_for_longer():
    async with serve_sim(seed=0) as live:
        pool = pool_of([live, f"http://127.0.0.1:{closed_port()}/v1"], eject_after=1, probe_s=0.05, max_probe_s=1.0)
        try:
            await pool.chat([user("a")], max_tokens=8)
            await pool.chat([user("b")], max_tokens=8)
            dead = pool.members[1]
            assert dead.out_until is not None and dead.probe_s == 0.05
            await asyncio.sleep(0.06)
            await pool.chat([user("c")], max_tokens=8)  # the probe fails; the request is answered by the live member
            assert dead.out_until is not None and dead.probe_s == 0.1 and dead.failed == 2
            assert pool.snapshot()[0]["served"] == 3
        finally:
            await pool.aclose()


async def test_all_endpoints_down_is_an_outage_with_attempts():
    pool = pool_of([f"http://127.0.0.1:{closed_port()}/v1" for _ in range(2)], eject_after=1, probe_s=0.01, max_retries=4)
    try:
        with pytest.raises(RetryableError) as info:
            await pool.chat([user("anyone?")], max_tokens=8)
        assert info.value.attempts == 5
    finally:
        await pool.aclose()


async def test_routing_follows_capacity():
    members = [SimTeacher(seed=i, latency_ms=50) for i in range(3)]
    pool = PoolTeacher(members, capacities=[1, 2, 3])
    seen: list[list[int]] = []

    async def one(i: int) -> None:
        await pool.chat([user(f"x{i}")], max_tokens=8)

    async def watch() -> None:
        await asyncio.sleep(0.02)  # every request has been routed, none has finished
        seen.append([m.in_flight for m in pool.members])

    await asyncio.gather(watch(), *(one(i) for i in range(30)))
    assert seen == [[5, 10, 15]]
    assert [s["served"] for s in pool.snapshot()] == [5, 10, 15]


async def test_rate_limited_member_is_passed_over():
    async with serve_sim(seed=0, script=["429"], retry_after_s=30) as limited, serve_sim(seed=1) as free:
        pool = pool_of([limited, free], probe_limits=False)
        try:
            for i in range(4):  # the 429 moves the first request to the free member at once, not after 30 s
                await asyncio.wait_for(pool.chat([user(f"q{i}")], max_tokens=8), 5)
            stats = pool.snapshot()
            assert stats[0]["served"] == 0 and stats[1]["served"] == 4 and not stats[0]["out"], stats
        finally:
            await pool.aclose()


def test_toml_endpoints_get_their_own_limits(tmp_path: Path):
    path = tmp_path / "pool.toml"
    path.write_text('[teacher]\nspec = "pool:openai:sim@http://127.0.0.1:9/v1"\nrpm = 600\nmax_concurrency = 4\n'
                    'options = { eject_after = 5, probe_s = 1.5 }\n\n'
                    '[[teacher.endpoints]]\nspec = "openai:sim@http://127.0.0.1:10/v1"\nrpm = 60\nmax_concurrency = 16\n')
    pool = make_teacher(path)
    first, second = (m.teacher for m in pool.members)
    assert first.limiter.configured["requests"] == 600 and second.limiter.configured["requests"] == 60
    assert [m.capacity for m in pool.members] == [4, 16]
    assert first.max_retries == 0 and second.max_bad_answer_retries == 0  # the pool retries, across members
    assert pool.eject_after == 5 and pool.first_probe_s == 1.5 and pool.max_retries == 6
    assert pool.name == "pool:openai:sim@http://127.0.0.1:9/v1,openai:sim@http://127.0.0.1:10/v1"


@pytest.mark.parametrize("spec, options, needle", [
    ("pool:", {}, "names no members"),
    ("pool:sim,pool:sim", {}, "nests a pool"),
    ("pool:sim", {"options": {"speed": 2}}, "speed"),
    ("pool:sim", {"options": {"probe_s": 0}}, "probe_s"),
])
def test_bad_pool_specs_are_refused(spec: str, options: dict, needle: str):
    with pytest.raises(UserInputError, match=needle):
        make_teacher({"spec": spec, **options})
