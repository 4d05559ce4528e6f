"""Stratified drawing: multi-turn variants on demand, and a source that fills each stratum's
target of stored positives however unequal the strata's yields."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from distill.strata import StratifiedSource, strata_weights, stratum_of_id
from graph.depgraph import build_graph
from graph.paths import PathSampler, apportion, stratum_of
from graph.paths_config import MULTI_TURN_VARIANTS, PathConfig
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits


@pytest.fixture(scope="module")
def sampler() -> PathSampler:
    pool = ToolPool(builtin_toolkits().values())
    return PathSampler(build_graph(pool.specs()), pool.specs(), PathConfig())


@pytest.mark.parametrize("variant", MULTI_TURN_VARIANTS)
def test_each_variant_is_drawn_on_demand_and_reproducibly(sampler: PathSampler, variant: str) -> None:
    paths = [sampler.path(f"multi_turn.{variant}", 3, i) for i in range(40)]
    assert {stratum_of(p) for p in paths} == {f"multi_turn.{variant}"}
    assert all(stratum_of_id(p.id) == f"multi_turn.{variant}" for p in paths)
    assert paths[7] == sampler.path(f"multi_turn.{variant}", 3, 7)
    assert len({tuple(f for t in p.turns for f in t.functions) for p in paths}) > 30  # a stream, not one path


def test_candidate_tools_are_sized_per_kind(sampler: PathSampler) -> None:
    cfg = sampler.config
    for i in range(50):
        assert sampler.path("single", 0, i).distractors == []
        mt = sampler.path("multi_turn.base", 0, i)
        used = {f for t in mt.turns for f in t.functions}
        lo, hi = cfg.multi_turn_distractors
        assert lo <= len(mt.distractors) <= hi and not used & set(mt.distractors)
        pm = sampler.path("parallel_multiple", 0, i)
        assert not {f for t in pm.turns for f in t.functions} & set(pm.distractors)


def test_strata_weights_follow_the_mixture_and_the_variant_shares() -> None:
    cfg = PathConfig(multi_turn_mixture={"base": 1, "long": 3})
    w = strata_weights(cfg, {"single": 2.0, "multi_turn": 4.0, "irrelevance": 0.0})
    assert w == {"single": 2.0, "multi_turn.base": 1.0, "multi_turn.long": 3.0}
    assert apportion(w, 12) == {"single": 4, "multi_turn.base": 2, "multi_turn.long": 6}


async def _drain(source: StratifiedSource, yields: dict[str, float], concurrency: int, seed: int = 0) -> Counter:
    """Run the source like the scheduler does: a path per free slot; each succeeds with its stratum's yield."""
    rng = random.Random(seed)
    stored: Counter = Counter()
    slots = asyncio.Semaphore(concurrency)
    tasks = []

    async def one(path):
        await asyncio.sleep(rng.random() / 1000)
        ok = rng.random() < yields[stratum_of_id(path.id)]
        stored[stratum_of_id(path.id)] += ok
        source.settle(path, ok, None if ok else "verify")
        slots.release()

    iterator = source.__aiter__()
    while True:
        await slots.acquire()
        try:
            path = await anext(iterator)
        except StopAsyncIteration:
            break
        tasks.append(asyncio.create_task(one(path)))
    await asyncio.gather(*tasks)
    return stored


async def test_source_fills_strata_of_very_different_yields(sampler: PathSampler) -> None:
    targets = {"single": 30, "multi_turn.long": 10, "irrelevance": 20}
    yields = {"single": 0.6, "multi_turn.long": 0.15, "irrelevance": 0.95}
    source = StratifiedSource(sampler, 0, targets, draw_factor=20, is_finished=lambda _: False)
    stored = await _drain(source, yields, concurrency=8)
    for s, n in targets.items():
        assert n <= stored[s] <= n + 3, (s, stored[s])  # in-flight overshoot stays small
    table = source.table()
    assert table["multi_turn.long"]["drawn"] >= 40  # a 15% stratum needs ~67 draws for 10 positives
    assert table["irrelevance"]["drawn"] <= 30  # a 95% stratum is not flooded
    assert all(row["filled"] for row in table.values())


async def test_a_stratum_that_cannot_fill_stops_at_its_draw_cap_and_says_where_paths_died(sampler) -> None:
    source = StratifiedSource(sampler, 0, {"single": 5, "parallel": 4}, draw_factor=3, is_finished=lambda _: False)
    stored = await _drain(source, {"single": 1.0, "parallel": 0.0}, concurrency=4)
    row = source.table()["parallel"]
    assert stored["parallel"] == 0 and row["drawn"] == 12 and row["died"] == {"verify": 12} and not row["filled"]
    assert source.table()["single"]["filled"]


async def test_patience_closes_a_stratum_the_teacher_never_passes_and_a_resume_keeps_it_closed(sampler) -> None:
    source = StratifiedSource(sampler, 0, {"single": 5, "parallel": 4}, draw_factor=20, is_finished=lambda _: False, patience=6)
    stored = await _drain(source, {"single": 1.0, "parallel": 0.0}, concurrency=4)
    row = source.table()["parallel"]
    # Closed at 6 failures (the ones in flight then still finish) instead of drawing 80 paths.
    assert stored["parallel"] == 0 and row["hopeless"] and 6 <= row["drawn"] <= 6 + 4 and row["died"]["verify"] == row["drawn"]
    assert source.table()["single"]["filled"] and not source.table()["single"]["hopeless"]
    # A stratum that passed once is never closed, however many failures follow; resumed counts close the same strata.
    rare = StratifiedSource(sampler, 0, {"parallel": 2}, draw_factor=20, is_finished=lambda _: False, patience=6)
    rare.resume([], ["parallel-0-0"], [(f"parallel-0-{j}", "verify") for j in range(1, 10)])
    assert not rare.strata["parallel"].hopeless()
    again = StratifiedSource(sampler, 0, {"parallel": 4}, draw_factor=20, is_finished=lambda _: False, patience=6)
    again.resume([], [], [(f"parallel-0-{j}", "verify") for j in range(6)])
    assert [p async for p in again] == []


async def test_resume_skips_finished_ids_and_counts_them(sampler) -> None:
    first = StratifiedSource(sampler, 0, {"single": 6}, draw_factor=4, is_finished=lambda _: False)
    await _drain(first, {"single": 0.5}, concurrency=2, seed=1)
    done = {sampler.path("single", 0, j).id for j in range(first.strata["single"].next_index)}
    positives = [pid for pid in done][: first.strata["single"].stored]
    again = StratifiedSource(sampler, 0, {"single": 6}, draw_factor=4, is_finished=done.__contains__)
    again.resume(sorted(done), positives, [])
    drawn_ids = [p.id async for p in _no_settle(again)]
    assert not set(drawn_ids) & done


async def _no_settle(source: StratifiedSource):
    """Paths the source offers, settled at once as stored positives."""
    async for path in source:
        source.settle(path, True, None)
        yield path
