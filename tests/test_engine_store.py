"""RunStore: round trips, dedup, resume, manifest, fingerprints, locking, disk failures (real files)."""

from __future__ import annotations

import errno
import logging
import os
import time

import _records_factory as F
import orjson
import pytest

from engine import shards
from engine.errors import UserInputError
from engine.records import RECORD_KINDS, WorkDone
from engine.shards import FRAME_OVERHEAD, iter_frames, shard_files
from engine.store import MANIFEST, RunStore, StoreWriteError, config_fingerprint, read_records, redact

FP = "fp-test"


def open_store(run_dir, **kw):
    return RunStore.open(run_dir, config_fingerprint=kw.pop("fp", FP), **kw)


def test_every_record_kind_round_trips(tmp_path):
    written = {kind: [] for kind in RECORD_KINDS}
    with open_store(tmp_path / "run") as store:
        for i in range(5):
            for kind, record in F.one_of_each(i).items():
                assert store.put(kind, record)
                written[kind].append(record)
        assert store.counts() == {kind: 5 for kind in RECORD_KINDS}
    for kind, records in written.items():
        back = list(read_records(tmp_path / "run", kind))
        assert back == records
        assert all(type(r) is RECORD_KINDS[kind] for r in back)


def test_put_checks_kind_and_type(tmp_path):
    with open_store(tmp_path / "run") as store:
        with pytest.raises(UserInputError, match="unknown record kind 'trajectory'"):
            store.put("trajectory", F.trajectory())
        with pytest.raises(TypeError, match="stores Episode, got Trajectory"):
            store.put("episodes", F.trajectory())
        with pytest.raises(ValueError, match="non-empty id"):
            store.put("done", WorkDone(id=""))


def test_duplicate_ids_are_refused_in_the_same_run_and_after_reopen(tmp_path):
    run = tmp_path / "run"
    with open_store(run) as store:
        assert store.put("trajectories", F.trajectory(1))
        assert not store.put("trajectories", F.trajectory(1))
        assert store.put("episodes", F.episode(1))
        store.commit("item-1", [("trajectories", F.trajectory(1)), ("paths", F.path(1))])
        assert store.is_finished("item-1") and store.has("paths", "path-1")
        assert not store.is_finished("item-2")
    with open_store(run) as store:
        assert store.has("trajectories", "traj-1-positive")
        assert store.is_finished("item-1")
        assert not store.put("trajectories", F.trajectory(1))
        store.commit("item-1", [("paths", F.path(1))])  # a re-run of a finished item stores nothing new
        assert store.put("trajectories", F.trajectory(2))
        assert store.counts()["trajectories"] == 2 and store.counts()["done"] == 1
    ids = [t.id for t in read_records(run, "trajectories")]
    assert ids == ["traj-1-positive", "traj-2-positive"]
    assert [d.id for d in read_records(run, "done")] == ["item-1"]
    assert next(read_records(run, "done")).outputs == ["traj-1-positive", "path-1"]


def test_dead_letter_finishes_its_item_across_reopen(tmp_path):
    run = tmp_path / "run"
    with open_store(run) as store:
        store.dead_letter(F.dead_letter(7))
        assert store.is_finished("item-7")
    with open_store(run) as store:
        assert store.is_finished("item-7") and store.has("dead_letters", "dl-7")
        assert not store.has("done", "item-7")


def test_fingerprint_mismatch_is_a_clear_error_and_force_starts_over(tmp_path):
    run = tmp_path / "run"
    with open_store(run, fp="aaa") as store:
        store.put("paths", F.path(0))
    with pytest.raises(UserInputError, match=r"config fingerprint aaa, this config has bbb; use a new --out, or --force"):
        open_store(run, fp="bbb")
    assert [p.id for p in read_records(run, "paths")] == ["path-0"]  # the refused open changed nothing
    with open_store(run, fp="bbb", force=True) as store:
        assert store.counts()["paths"] == 0
    assert orjson.loads((run / MANIFEST).read_bytes())["config_fingerprint"] == "bbb"


def test_a_foreign_folder_is_not_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"not empty and has no manifest\.json \(found notes\.txt\)"):
        open_store(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_second_writer_on_the_same_run_is_refused(tmp_path):
    with open_store(tmp_path / "run"):
        with pytest.raises(UserInputError, match="in use by another magnet process"):
            open_store(tmp_path / "run")
    open_store(tmp_path / "run").close()  # the lock went with the first store


def test_manifest_is_atomic_complete_and_secret_free(tmp_path):
    run = tmp_path / "run"
    secret = "sk-live-DO-NOT-LEAK-1234567890"
    config = {
        "teacher": {"spec": "openai:gpt-x@http://127.0.0.1:1", "api_key": secret, "auth_token": secret},
        "out": str(run),
        "db_password": secret,
        "workers": [{"client_secret": secret, "name": "w1"}],
        "seed": 3,
    }
    run.mkdir()
    (run / f".{MANIFEST}.999.tmp").write_text("{half")  # left by a crash mid-replace
    with open_store(run, fp=config_fingerprint(config), config=config) as store:
        store.commit("item-0", [("trajectories", F.trajectory(0))])
        store.write_manifest({"stage": "rollout", "api_key": secret})
    manifest = orjson.loads((run / MANIFEST).read_bytes())
    assert manifest["config"] == {"teacher": {"spec": "openai:gpt-x@http://127.0.0.1:1"}, "out": str(run), "workers": [{"name": "w1"}], "seed": 3}
    assert manifest["extra"] == {"stage": "rollout"}
    assert manifest["counts"]["trajectories"] == 1 and manifest["counts"]["done"] == 1
    assert manifest["bytes"]["trajectories"] == sum(p.stat().st_size for p in shard_files(run / "trajectories"))
    assert manifest["code_version"]["package"] == "magnet-engine" and manifest["code_version"]["version"]
    assert manifest["created"] <= manifest["updated"]
    assert sorted(p.name for p in run.iterdir()) == sorted([".lock", MANIFEST, *RECORD_KINDS])  # no temp files
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_fingerprint_ignores_secrets_and_key_order():
    a = config_fingerprint({"b": 1, "a": {"x": 2, "api_key": "k1"}})
    assert a == config_fingerprint({"a": {"api_key": "k2", "x": 2}, "b": 1})
    assert a != config_fingerprint({"b": 2, "a": {"x": 2}})
    assert redact({"max_tokens": 5, "Password": "p", "l": [{"token": 1}]}) == {"l": [{}]}


def test_records_are_buffered_until_flush_then_durable(tmp_path):
    run = tmp_path / "run"
    store = open_store(run, flush_interval=3600, buffer_bytes=1 << 30)
    for i in range(20):
        store.commit(f"item-{i}", [("trajectories", F.trajectory(i))])
    assert list(read_records(run, "trajectories")) == []  # still in memory: no write per record
    store.flush()
    assert len(list(read_records(run, "trajectories"))) == 20
    assert len(list(read_records(run, "done"))) == 20
    store.close()


def test_buffer_size_triggers_write_out_without_flush(tmp_path):
    run = tmp_path / "run"
    store = open_store(run, flush_interval=3600, buffer_bytes=8 << 10)
    for i in range(30):
        store.commit(f"item-{i}", [("trajectories", F.trajectory(i))])
    on_disk = len(list(read_records(run, "trajectories")))
    assert 20 <= on_disk < 30
    # Markers never run ahead of their records on disk.
    done_on_disk = {d.id for d in read_records(run, "done")}
    assert all(f"item-{i}" in done_on_disk for i in range(len(done_on_disk)))
    assert len(done_on_disk) <= on_disk
    store.close()


def test_commit_durability_writes_each_commit(tmp_path):
    run = tmp_path / "run"
    store = open_store(run, durability="commit", flush_interval=3600)
    store.commit("item-0", [("episodes", F.episode(0))])
    assert [e.id for e in read_records(run, "episodes")] == ["ep-0"]
    assert [d.id for d in read_records(run, "done")] == ["item-0"]
    store.close()


def test_rotation_and_resume_across_many_files(tmp_path):
    run = tmp_path / "run"
    with open_store(run, shard_bytes=8 << 10) as store:
        for i in range(40):
            store.commit(f"item-{i}", [("trajectories", F.trajectory(i))])
    files = shard_files(run / "trajectories")
    assert len(files) >= 5
    with open_store(run, shard_bytes=8 << 10) as store:
        assert store.counts()["trajectories"] == 40
        for i in range(30, 60):
            if not store.is_finished(f"item-{i}"):
                store.commit(f"item-{i}", [("trajectories", F.trajectory(i))])
    ids = [t.id for t in read_records(run, "trajectories")]
    assert ids == [f"traj-{i}-positive" for i in range(60)]
    assert shard_files(run / "trajectories")[: len(files)] == files


@pytest.mark.parametrize("cut_into_frame", [1, 6, FRAME_OVERHEAD, FRAME_OVERHEAD + 5, -1])
def test_torn_done_marker_means_the_item_runs_again_once(tmp_path, cut_into_frame):
    run = tmp_path / "run"
    with open_store(run) as store:
        for i in range(5):
            store.commit(f"item-{i}", [("trajectories", F.trajectory(i))])
    done_file = shard_files(run / "done")[-1]
    last = [off for off, _ in iter_frames(done_file)][-1]
    cut = done_file.stat().st_size - 1 if cut_into_frame == -1 else last + cut_into_frame
    with open(done_file, "r+b") as f:
        f.truncate(cut)

    with open_store(run) as store:
        assert [c.torn_tail for c in store.corruptions] == [True]
        assert done_file.stat().st_size == last
        assert [store.is_finished(f"item-{i}") for i in range(5)] == [True] * 4 + [False]
        store.commit("item-4", [("trajectories", F.trajectory(4))])  # the re-run: its record is kept, not doubled
    assert [t.id for t in read_records(run, "trajectories")] == [f"traj-{i}-positive" for i in range(5)]
    assert [d.id for d in read_records(run, "done")] == [f"item-{i}" for i in range(5)]
    manifest = orjson.loads((run / MANIFEST).read_bytes())
    assert manifest["counts"]["done"] == 5


def test_corrupted_middle_frame_is_reported_with_file_and_offset(tmp_path, caplog):
    run = tmp_path / "run"
    with open_store(run) as store:
        for i in range(6):
            store.put("episodes", F.episode(i))
    path = shard_files(run / "episodes")[0]
    offsets = [off for off, _ in iter_frames(path)]
    with open(path, "r+b") as f:
        f.seek(offsets[2] + FRAME_OVERHEAD + 10)
        f.write(b"\x00\x01\x02")
    reports = []
    assert [e.id for e in read_records(run, "episodes", on_corrupt=reports.append)] == ["ep-0", "ep-1", "ep-3", "ep-4", "ep-5"]
    assert [(r.path, r.offset, r.torn_tail) for r in reports] == [(str(path), offsets[2], False)]
    with caplog.at_level(logging.WARNING, logger="engine.store"):
        assert len(list(read_records(run, "episodes"))) == 5
    assert f"corrupted frame in {path} at byte {offsets[2]}" in caplog.text

    with open_store(run) as store:  # resume keeps the records after the damage
        assert store.counts()["episodes"] == 5 and not store.has("episodes", "ep-2")
        assert [(c.offset, c.torn_tail) for c in store.corruptions] == [(offsets[2], False)]
        assert store.put("episodes", F.episode(2))  # the lost one can be produced again
    assert orjson.loads((run / MANIFEST).read_bytes())["last_open"]["corrupted_frames"] == 1


def test_disk_write_failure_is_clear_and_loses_nothing_stored(tmp_path, monkeypatch):
    run = tmp_path / "run"
    store = open_store(run, flush_interval=3600, buffer_bytes=1 << 30)
    for i in range(10):
        store.commit(f"item-{i}", [("trajectories", F.trajectory(i)), ("episodes", F.episode(i))])
    store.flush()  # items 0-9 are stored

    real_write = os.write

    def disk_fills_up(fd, data):
        real_write(fd, bytes(data[: len(data) // 3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "write", disk_fills_up)
    for i in range(10, 15):
        store.commit(f"item-{i}", [("trajectories", F.trajectory(i)), ("episodes", F.episode(i))])
    with pytest.raises(StoreWriteError) as info:
        store.flush()
    message = str(info.value)
    assert str(run) in message and "No space left on device" in message
    assert "free some disk space" in message and "rerun the same command to resume" in message
    assert isinstance(info.value, UserInputError)  # the CLI prints it as one line and exits 2
    with pytest.raises(StoreWriteError):
        store.put("paths", F.path(0))  # nothing is written after a failure
    store.close()
    monkeypatch.undo()

    with open_store(run) as store:
        assert all(store.is_finished(f"item-{i}") for i in range(10))
        assert not any(store.is_finished(f"item-{i}") for i in range(10, 15))
        for i in range(10, 15):
            store.commit(f"item-{i}", [("trajectories", F.trajectory(i)), ("episodes", F.episode(i))])
    for kind, prefix in [("trajectories", "traj-{}-positive"), ("episodes", "ep-{}")]:
        ids = [r.id for r in read_records(run, kind)]
        assert sorted(ids) == sorted(prefix.format(i) for i in range(15)) and len(ids) == 15


@pytest.mark.parametrize("failing", ["trajectories", "done"])
def test_failure_in_one_folder_keeps_records_and_markers_consistent(tmp_path, monkeypatch, failing):
    """One folder's file fails (EIO) while the others still work. Records folder failing: the
    item's marker must not land anyway (not at flush, not at close). Marker folder failing:
    the records landed; on resume the item runs again and its records are not stored twice."""
    run = tmp_path / "run"
    store = open_store(run, flush_interval=3600, buffer_bytes=1 << 30)
    store.commit("item-0", [("trajectories", F.trajectory(0))])
    store.flush()
    fd = os.open(store._writers[failing].current_path, os.O_RDONLY)
    failing_inode = os.fstat(fd).st_ino
    os.close(fd)
    real_write = os.write

    def fail_there(fd, data):
        if os.fstat(fd).st_ino == failing_inode:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(shards.os, "write", fail_there)
    store.commit("item-1", [("trajectories", F.trajectory(1))])
    with pytest.raises(StoreWriteError, match="check the disk"):
        store.flush()
    store.close()
    monkeypatch.undo()
    with open_store(run) as store:
        assert store.is_finished("item-0") and not store.is_finished("item-1")
        assert store.has("trajectories", "traj-1-positive") == (failing == "done")
        store.commit("item-1", [("trajectories", F.trajectory(1))])
    assert [t.id for t in read_records(run, "trajectories")] == ["traj-0-positive", "traj-1-positive"]
    assert [d.id for d in read_records(run, "done")] == ["item-0", "item-1"]


def test_timer_flush_writes_out_idle_buffers(tmp_path):
    run = tmp_path / "run"
    store = open_store(run, flush_interval=0.05, buffer_bytes=1 << 30)
    store.commit("item-0", [("paths", F.path(0))])
    store.maybe_flush()
    assert list(read_records(run, "paths")) == []  # interval not yet over: still buffered
    time.sleep(0.06)
    store.maybe_flush()  # what a scheduler's timer calls while the teacher is slow
    assert [p.id for p in read_records(run, "paths")] == ["path-0"]
    assert [d.id for d in read_records(run, "done")] == ["item-0"]
    store.close()


def test_a_run_that_cannot_be_opened_for_writing_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    with open_store(run) as store:
        store.put("episodes", F.episode(0))
    for path in shard_files(run / "paths"):
        path.unlink()
    (run / "paths").rmdir()
    (run / "paths").write_text("not a folder")  # the OS refuses to use it as one (for root too)
    with pytest.raises(UserInputError, match=rf"cannot open run directory {run} for writing \(File exists: .*paths\)"):
        open_store(run)
    assert [e.id for e in read_records(run, "episodes")] == ["ep-0"]
    (run / "paths").unlink()
    with open_store(run) as store:  # fixed: the failed open left nothing locked or half-done
        assert store.counts()["episodes"] == 1


# -- markers agree with the data (issue 11, item 3) ---------------------------------------------


def _item_records(i: int) -> list:
    return [("paths", F.path(i)), ("episodes", F.episode(i)), ("trajectories", F.trajectory(i))]


def _commit_items(run, n: int) -> None:
    with open_store(run) as store:
        for i in range(n):
            store.commit(f"item-{i}", _item_records(i))


def _stored_once(run) -> dict[str, list[str]]:
    ids = {kind: [r.id for r in read_records(run, kind)] for kind in RECORD_KINDS}
    for kind, got in ids.items():
        assert len(got) == len(set(got)), f"{kind} holds an id twice"
    return ids


def test_truncated_data_shard_is_reported_and_its_items_run_again(tmp_path, caplog):
    run = tmp_path / "run"
    _commit_items(run, 30)
    path = shard_files(run / "trajectories")[0]
    offsets = [off for off, _ in iter_frames(path)]
    with open(path, "r+b") as f:
        f.truncate(offsets[12] + 7)  # items 12.. lose their trajectory; their markers stay on disk
    lost = {f"item-{i}" for i in range(12, 30)}

    with caplog.at_level(logging.WARNING, logger="engine.store"), open_store(run) as store:
        assert set(store.incomplete_items) == lost
        assert [i for i in range(30) if not store.is_finished(f"item-{i}")] == list(range(12, 30))
        assert store.counts()["done"] == 12 and store.counts()["trajectories"] == 12
        for i in range(12, 30):  # the rerun: paths and episodes are still there and are not doubled
            store.commit(f"item-{i}", _item_records(i))
        assert store.incomplete_items == [] and store.counts()["done"] == 30
    assert "18 finished work items have records missing from the shards" in caplog.text
    assert f"torn tail in {path}" in caplog.text
    ids = _stored_once(run)
    assert sorted(ids["trajectories"]) == sorted(f"traj-{i}-positive" for i in range(30))
    assert len(ids["done"]) == 30  # the rerun made the same records: the old markers are true again
    manifest = orjson.loads((run / MANIFEST).read_bytes())
    assert manifest["counts"]["done"] == 30 and manifest["last_open"]["finished_items_missing_records"] == 18
    with open_store(run) as store:
        assert store.incomplete_items == [] and all(store.is_finished(f"item-{i}") for i in range(30))


def test_flipped_byte_in_the_middle_makes_only_that_item_run_again(tmp_path):
    run = tmp_path / "run"
    _commit_items(run, 10)
    path = shard_files(run / "episodes")[0]
    offsets = [off for off, _ in iter_frames(path)]
    with open(path, "r+b") as f:
        f.seek(offsets[4] + FRAME_OVERHEAD + 30)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with open_store(run) as store:
        assert store.incomplete_items == ["item-4"] and not store.is_finished("item-4")
        assert [(c.offset, c.torn_tail) for c in store.corruptions] == [(offsets[4], False)]
        store.commit("item-4", _item_records(4))
    ids = _stored_once(run)
    assert sorted(ids["episodes"]) == sorted(f"ep-{i}" for i in range(10))


def test_a_rerun_with_other_records_writes_a_marker_that_wins(tmp_path):
    run = tmp_path / "run"
    _commit_items(run, 3)
    path = shard_files(run / "trajectories")[0]
    with open(path, "r+b") as f:
        f.truncate([off for off, _ in iter_frames(path)][2])
    with open_store(run) as store:
        assert store.incomplete_items == ["item-2"]
        # A non-deterministic teacher made another trajectory this time.
        store.commit("item-2", [("paths", F.path(2)), ("episodes", F.episode(2)), ("trajectories", F.trajectory(2, "negative"))])
    assert [d.id for d in read_records(run, "done")] == ["item-0", "item-1", "item-2", "item-2"]
    with open_store(run) as store:
        assert store.incomplete_items == [] and store.is_finished("item-2") and store.counts()["done"] == 3


def test_a_manifest_that_is_not_an_object_is_one_clear_error_and_force_starts_over(tmp_path):
    run = tmp_path / "run"
    _commit_items(run, 2)
    (run / MANIFEST).write_text("[]")
    with pytest.raises(UserInputError, match=r"manifest\.json holds a JSON list, not a magnet manifest.*--force"):
        open_store(run)
    with open_store(run, force=True) as store:
        assert store.counts()["done"] == 0
    assert orjson.loads((run / MANIFEST).read_bytes())["config_fingerprint"] == FP
