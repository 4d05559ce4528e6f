"""IdSet (issue 15, item 4): behaves exactly like a set of strings for every id form, costs about
a bit per path-numbered id, and the run store resumed on such ids skips exactly what it stored."""

from __future__ import annotations

import random
from pathlib import Path

from engine.id_index import IdSet
from engine.records import Episode, SignaturePath, WorkDone
from engine.store import RunStore

ODD = ["item-7", "t12", "", "a-01-5", "single-0-007", "single-0-7x", "x-1-2-3", "x-1-2#neg", "multi_turn.long-3-0",
       "ep-single-0-0-pair-0", "ep-single-0-0-pair-1", "-0-0", "0-0", "ünïcode-1-2", "single-00-1", "dl-single-0-4-negative"]


def random_id(rng: random.Random) -> str:
    stratum = rng.choice(["single", "parallel", "multi_turn.long", "irrelevance", "a-1"])
    seed = rng.choice(["0", "1", "42", "007"])
    index = rng.choice([str(rng.randrange(5000)), "0", "0" + str(rng.randrange(10))])
    pid = f"{stratum}-{seed}-{index}"
    return rng.choice([pid, f"ep-{pid}", f"ep-{pid}-pos", f"ep-{pid}-neg-{rng.randrange(3)}", f"{pid}#negative",
                       f"ep-{pid}-pair-{rng.randrange(3)}", f"dl-{pid}-negative", rng.choice(ODD)])


def test_behaves_like_a_set_of_strings():
    rng = random.Random(7)
    ours, ref = IdSet(), set()
    for _ in range(20_000):
        item = random_id(rng)
        assert ours.add(item) == (item not in ref), item
        ref.add(item)
        probe = random_id(rng)
        assert (probe in ours) == (probe in ref), probe
    assert len(ours) == len(ref)
    assert all(i in ours for i in ref)
    assert 5 not in ours and None not in ours
    ours.clear()
    assert len(ours) == 0 and not any(i in ours for i in ref)


def test_neighbouring_shapes_do_not_alias():
    held = ["single-0-5", "ep-single-0-5-pos", "single-0-5#negative"]
    ids = IdSet(held)
    assert all(i in ids for i in held) and len(ids) == 3
    for other in ("single-1-5", "single-0-6", "ep-single-0-5", "ep-single-0-5-neg-0", "parallel-0-5", "single-0-05",
                  "ep-single-0-5-pos-", "single-0-5#", "xsingle-0-5"):
        assert other not in ids, other


def test_path_numbered_ids_cost_about_a_bit_each():
    ids = IdSet()
    n = 200_000
    for stratum in ("single", "parallel", "multi_turn.base"):
        for i in range(n):
            pid = f"{stratum}-3-{i}"
            ids.add(pid)
            ids.add(f"ep-{pid}-pos")
    assert len(ids) == 6 * n
    assert ids.nbytes() <= 6 * (n // 8 + 1)  # one bit per id: 6 bitmaps of n bits
    assert "single-3-199999" in ids and "single-3-200000" not in ids


def _path(pid: str) -> SignaturePath:
    return SignaturePath(id=pid, kind="single", turns=[], seed=0)


def test_store_resume_with_compact_index_skips_exactly_what_it_stored(tmp_path: Path):
    stored = [f"single-0-{i}" for i in range(0, 3000, 3)] + ["odd-item", "single-0-0043"]
    with RunStore.open(tmp_path / "run", config_fingerprint="ids") as store:
        for pid in stored:
            store.commit(pid, [("paths", _path(pid)), ("episodes", Episode(id=f"ep-{pid}", path_id=pid, kind="single", tools=[]))])
    with RunStore.open(tmp_path / "run", config_fingerprint="ids") as store:
        for i in range(3000):
            assert store.is_finished(f"single-0-{i}") == (i % 3 == 0), i
        assert store.is_finished("odd-item") and store.is_finished("single-0-0043") and not store.is_finished("single-0-43")
        assert store.counts()["done"] == len(stored) and store.counts()["episodes"] == len(stored)
        assert not store.put("paths", _path("single-0-3")) and store.put("paths", _path("single-0-4"))
        assert not store.put("done", WorkDone(id="single-0-0043")) and store.incomplete_items == []
