"""The viewer's paging index and run facts, on runs written by the real shard store (no browser).

Expected pages are computed from how the synthetic records were made (bench/view_paging.py's
``trajectory(i)``), not from the index, so a filter or paging bug shows up as a difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _records_factory as F
import pytest

from bench.view_paging import NEEDLE_EVERY, TEACHERS, trajectory
from engine.errors import UserInputError
from engine.store import RunStore
from engine.view.config import ViewConfig, load_config
from engine.view.index import KindIndex, RunIndex
from engine.view.runinfo import find_reports, is_live, rounds_table

N = 3000


def _built(run_dir: Path, kind: str = "trajectories") -> KindIndex:
    ix = KindIndex(run_dir, kind)
    ix.start()
    return _complete(ix)


def _complete(ix: KindIndex, timeout: float = 60) -> KindIndex:
    deadline = time.monotonic() + timeout
    while not ix.complete:
        assert time.monotonic() < deadline, "index did not finish"
        time.sleep(0.01)
    return ix


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("view-index") / "run"
    # Small shard files: the run spans many files, so paging and search cross file boundaries.
    with RunStore.open(run_dir, config_fingerprint="view-index", shard_bytes=128 << 10, durability="close") as store:
        for i in range(N):
            store.put("trajectories", trajectory(i))
    return run_dir


def _all_pages(ix: KindIndex, filters: dict[str, str], size: int, **kw) -> list[int]:
    positions, start, pages = [], 0, 0
    while start is not None:
        pg = ix.page(filters, start, size, **kw)
        assert len(pg.positions) <= size
        positions += pg.positions
        start = pg.next_start
        pages += 1
        assert pages < 10 * N, "paging does not end"
    return positions


def _ids(ix: KindIndex, positions: list[int]) -> list[str]:
    import msgspec

    from engine.records import Trajectory

    dec = msgspec.msgpack.Decoder(Trajectory)
    return [dec.decode(ix.read(p)).id for p in positions]


@pytest.mark.parametrize("filters, want", [
    ({}, lambda i: True),
    ({"polarity": "negative"}, lambda i: i % 2 == 1),
    ({"polarity": "negative", "teacher": TEACHERS[2]}, lambda i: i % 2 == 1 and i % 3 == 2),
    ({"stratum": "multi_turn.long", "function": "math_op_3"}, lambda i: i % 10 == 7 and i % 7 == 4 and i % 13 == 3),
    ({"path_kind": "multi_turn", "verified": "passed", "toolkit": "banking"}, lambda i: i % 10 >= 5 and i % 2 == 0 and i % 7 == 5),
    ({"error_type": "wrong_value", "source": "perturbed:wrong_value"}, lambda i: i % 2 == 1),
    ({"teacher": "no-such-teacher"}, lambda i: False),
])
def test_pages_hold_exactly_the_matching_records_in_write_order(run, filters, want):
    ix = _built(run)
    ix.start()  # (a no-op restart on a complete index must not duplicate records)
    _complete(ix)
    assert ix.n == N
    expected = [trajectory(i).id for i in range(N) if want(i)]
    got = _ids(ix, _all_pages(ix, filters, 37))
    assert got == expected
    assert ix.count(filters) == len(expected)


def test_previous_links_walk_back_over_the_same_pages(run):
    ix = _built(run)
    filters = {"polarity": "positive", "toolkit": "travel"}
    forward, start = [], 0
    while start is not None:
        pg = ix.page(filters, start, 25)
        forward.append(pg.positions)
        start = pg.next_start
    backward, start = [], forward[-1][0]
    while True:
        pg = ix.page(filters, start, 25)
        backward.append(pg.positions)
        if pg.prev_start is None:
            break
        start = pg.prev_start
    assert backward[::-1] == forward


def test_text_search_finds_every_record_holding_the_text_and_resumes_after_its_budget(run):
    ix = _built(run)
    needle = "Operation 12 for LISBON"  # in the user turn of every 13th record (case-insensitive)
    expected = [trajectory(i).id for i in range(N) if i % 13 == 12 and i % NEEDLE_EVERY != 7]
    assert _ids(ix, _all_pages(ix, {}, 10, text=needle)) == expected
    assert _ids(ix, _all_pages(ix, {"polarity": "positive"}, 10, text=needle)) == [t for t in expected if t.endswith("-pos")]
    # A budget too small for any scan: every page stops early and says where to go on; following
    # those cursors still yields every match once, in order.
    stopped = _all_pages(ix, {}, 10, text=needle, search_budget_s=1e-9)
    assert _ids(ix, stopped) == expected
    assert ix.page({}, 0, 10, text="zanzibar").positions == [7]
    assert ix.page({}, 0, 10, text="no such words anywhere").positions == []


def test_lookup_by_id_and_a_bounded_index(run):
    ix = _built(run)
    for i in (0, 1, 1234, N - 1):
        pos = ix.lookup(trajectory(i).id)
        assert pos is not None and _ids(ix, [pos]) == [trajectory(i).id]
    assert ix.lookup("ep-single-0-999999-pos") is None
    assert len(ix.files) > 5
    # Per record: file number, offset, id hash, 5 single-valued codes, ~4 posting entries; never records.
    assert ix.nbytes() / ix.n <= 64
    assert dict(ix.values("polarity")) == {"positive": N // 2, "negative": N // 2}


def test_a_live_run_is_seen_growing_and_a_rewritten_folder_is_indexed_again(tmp_path):
    run_dir = tmp_path / "live"
    store = RunStore.open(run_dir, config_fingerprint="live", durability="close")
    try:
        for i in range(100):
            store.put("trajectories", trajectory(i))
            store.dead_letter(F.dead_letter(i))
        store.flush()
        assert is_live(run_dir)
        runs = RunIndex(run_dir)
        ix = _complete(runs.get("trajectories"))
        assert ix.n == 100
        for i in range(100, 150):
            store.put("trajectories", trajectory(i))
        store.flush()
        ix._last_check = 0.0  # (refresh looks again at most every 2 s)
        assert runs.get("trajectories") is ix
        _complete(ix)
        assert ix.n == 150 and ix.lookup(trajectory(149).id) is not None
        assert _ids(ix, ix.page({}, 140, 50).positions) == [trajectory(i).id for i in range(140, 150)]
        dead = _complete(runs.get("dead_letters"))
        assert dead.n == 100 and dict(dead.values("stage")) == {"rollout": 100}
        store.requeue_dead_letters(lambda dl: dl.item_id.endswith("7"))  # replaces the folder's files
        dead._last_check = 0.0
        runs.get("dead_letters")
        fresh = _complete(runs.get("dead_letters"))
        assert fresh is not dead and fresh.n == 90
    finally:
        store.close()
    assert not is_live(run_dir)


def test_a_damaged_frame_is_skipped_and_reported(tmp_path):
    run_dir = tmp_path / "damaged"
    with RunStore.open(run_dir, config_fingerprint="damaged", durability="close") as store:
        for i in range(50):
            store.put("trajectories", trajectory(i))
    shard = next((run_dir / "trajectories").iterdir())
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    ix = _built(run_dir)
    assert ix.n == 49 and ix.damaged == 1 and "CRC" in ix.damage[0].reason
    assert len(_all_pages(ix, {}, 10)) == 49


def test_config_checks_its_options(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_config([str(tmp_path / "nope")])
    with pytest.raises(UserInputError, match="port"):
        load_config([str(tmp_path), "--port", "70000"])
    config = load_config([str(tmp_path), "--port", "0", "--reports", "a", "b", "--page-size", "20"])
    assert (config.port, config.reports, config.page_size, config.host) == (0, ["a", "b"], 20, "127.0.0.1")
    assert config.loopback and not ViewConfig(run="x", host="0.0.0.0").loopback


def test_reports_are_found_and_bad_ones_become_notes(tmp_path):
    (tmp_path / "round-1").mkdir()
    (tmp_path / "round-2").mkdir()
    (tmp_path / "round-1" / "report.json").write_text(json.dumps({"model": "m", "categories": {"simple": {"accuracy": 0.5}}}))
    (tmp_path / "round-2" / "report.json").write_text(json.dumps({"model": "m", "categories": {"simple": {"accuracy": 0.75}}}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text("{not json")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    reports = find_reports([tmp_path])
    by_kind = {r.path.parent.name: r for r in reports}
    assert by_kind["broken"].data is None and "not valid JSON" in by_kind["broken"].note
    assert [row["loss"] for row in by_kind["train"].data] == [2.0, 1.5] and "1 unreadable" in by_kind["train"].note
    assert rounds_table(reports) == [("1", {"simple": 0.5}), ("2", {"simple": 0.75})]
    (tmp_path / "rounds.json").write_text(json.dumps({"rounds": [{"round": 0, "scores": {"a": 0.1}}, {"round": 1, "scores": {"a": 0.3}}]}))
    assert rounds_table(find_reports([tmp_path])) == [("0", {"a": 0.1}), ("1", {"a": 0.3})]
    assert find_reports([tmp_path / "missing"]) == []
