"""Shard files: framing, rotation, torn tails, corrupted frames, failed writes (real files)."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import shards
from engine.errors import UserInputError
from engine.shards import FRAME_OVERHEAD, HEADER, SYNC, ShardWriteError, ShardWriter, iter_folder, iter_frames, shard_files


def payloads(n: int) -> list[bytes]:
    # Varying sizes, and some payloads that contain the sync marker, to exercise resync.
    return [(f"record-{i}-".encode() * (1 + i % 7)) + (SYNC if i % 5 == 0 else b"") for i in range(n)]


def write(folder, items, **kw) -> None:
    writer = ShardWriter.open(folder, **kw)
    for p in items:
        writer.append(p)
    writer.close()


def frame_offsets(path) -> list[int]:
    return [off for off, _ in iter_frames(path)]


def test_round_trip_and_rotation(tmp_path):
    items = payloads(300)
    write(tmp_path / "k", items, shard_bytes=2000)
    files = shard_files(tmp_path / "k")
    assert len(files) > 5
    assert [p.name for p in files[:2]] == ["000001.shard", "000002.shard"]
    assert all(p.stat().st_size <= 2000 for p in files)
    assert all(p.read_bytes().startswith(HEADER) for p in files)
    assert list(iter_folder(tmp_path / "k")) == items


def test_reopen_appends_to_last_file_and_keeps_numbering(tmp_path):
    folder = tmp_path / "k"
    write(folder, payloads(50), shard_bytes=1500)
    before = shard_files(folder)
    seen = []
    writer = ShardWriter.open(folder, shard_bytes=1500, on_payload=seen.append)
    assert seen == payloads(50)
    assert writer.current_path == before[-1]
    for p in payloads(60)[50:]:
        writer.append(p)
    writer.close()
    assert shard_files(folder)[: len(before)] == before
    assert list(iter_folder(folder)) == payloads(60)


def test_oversized_record_gets_a_file_of_its_own(tmp_path):
    big = b"x" * 5000
    write(tmp_path / "k", [b"a", big, b"b"], shard_bytes=1000)
    files = shard_files(tmp_path / "k")
    assert len(files) == 3
    assert files[1].stat().st_size == len(HEADER) + FRAME_OVERHEAD + len(big)
    assert list(iter_folder(tmp_path / "k")) == [b"a", big, b"b"]


def _cut_points(path) -> list[int]:
    """Byte positions inside the last frame (header and payload) and inside the file header."""
    last = frame_offsets(path)[-1]
    size = path.stat().st_size
    return [last + 1, last + 4, last + 7, last + FRAME_OVERHEAD - 1, last + FRAME_OVERHEAD, last + FRAME_OVERHEAD + 3, size - 1]


@pytest.mark.parametrize("position", range(7))
def test_torn_tail_is_truncated_and_writing_continues(tmp_path, position):
    folder = tmp_path / "k"
    items = payloads(20)
    write(folder, items)
    path = shard_files(folder)[0]
    cut = _cut_points(path)[position]
    last_frame = frame_offsets(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(cut)

    reports = []
    assert list(iter_folder(folder, reports.append)) == items[:-1]
    assert len(reports) == 1 and reports[0].torn_tail and reports[0].offset == last_frame

    reports, seen = [], []
    writer = ShardWriter.open(folder, on_payload=seen.append, on_corrupt=reports.append)
    assert seen == items[:-1]
    assert [(r.torn_tail, r.offset, r.path) for r in reports] == [(True, last_frame, str(path))]
    assert path.stat().st_size == last_frame  # cut back to the end of the last whole frame
    writer.append(b"after-the-crash")
    writer.close()
    reports = []
    assert list(iter_folder(folder, reports.append)) == items[:-1] + [b"after-the-crash"]
    assert reports == []


@pytest.mark.parametrize("cut", [0, 5, len(HEADER) - 1])
def test_file_with_torn_header_is_rewritten(tmp_path, cut):
    folder = tmp_path / "k"
    write(folder, [b"one"], shard_bytes=len(HEADER) + FRAME_OVERHEAD + 3)
    write(folder, [b"two"], shard_bytes=len(HEADER) + FRAME_OVERHEAD + 3)  # rotates into 000002
    second = shard_files(folder)[1]
    with open(second, "r+b") as f:
        f.truncate(cut)
    writer = ShardWriter.open(folder, shard_bytes=1 << 20)
    writer.append(b"three")
    writer.close()
    assert second.read_bytes().startswith(HEADER)
    assert list(iter_folder(folder)) == [b"one", b"three"]


def _damage(path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


@pytest.mark.parametrize(
    "where, reason",
    [
        ("payload", "CRC mismatch"),
        ("sync", "no frame marker"),
        ("length_huge", "runs past the end"),
        ("length_small", "CRC mismatch"),
    ],
)
def test_corrupted_middle_frame_is_reported_and_skipped(tmp_path, where, reason):
    folder = tmp_path / "k"
    items = payloads(40)
    write(folder, items)
    path = shard_files(folder)[0]
    victim = 17
    off = frame_offsets(path)[victim]
    if where == "payload":
        _damage(path, off + FRAME_OVERHEAD + 2, b"\xff\xfe")
    elif where == "sync":
        _damage(path, off, b"XXXX")
    elif where == "length_huge":
        _damage(path, off + 4, struct.pack("<I", 1 << 29))
    else:
        _damage(path, off + 4, struct.pack("<I", 3))

    reports = []
    assert list(iter_folder(folder, reports.append)) == items[:victim] + items[victim + 1 :]
    assert len(reports) == 1
    bad = reports[0]
    assert not bad.torn_tail
    assert (bad.path, bad.offset, bad.length) == (str(path), off, FRAME_OVERHEAD + len(items[victim]))
    assert reason in bad.reason
    assert str(path) in bad.describe() and f"byte {off}" in bad.describe()

    # A writer opening the folder keeps everything after the damage (it is not a torn tail).
    seen = []
    ShardWriter.open(folder, on_payload=seen.append).close()
    assert seen == items[:victim] + items[victim + 1 :]


def test_resync_is_not_fooled_by_a_frame_embedded_in_a_payload(tmp_path):
    """A payload carrying a complete, valid frame: if that payload's CRC breaks, the reader
    must continue at the real next frame, not yield the embedded one."""
    folder = tmp_path / "k"
    embedded = SYNC + struct.pack("<II", 5, __import__("zlib").crc32(b"ghost")) + b"ghost"
    items = [b"first", b"pre" + embedded + b"post", b"third"]
    write(folder, items)
    path = shard_files(folder)[0]
    _damage(path, frame_offsets(path)[1] + FRAME_OVERHEAD, b"P")  # "pre" -> "Pre": CRC breaks
    reports = []
    assert list(iter_folder(folder, reports.append)) == [b"first", b"third"]
    assert len(reports) == 1


def test_garbage_after_the_last_frame_is_a_torn_tail(tmp_path):
    folder = tmp_path / "k"
    write(folder, [b"a", b"b"])
    path = shard_files(folder)[0]
    end = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)  # what a power loss can leave: a zero-filled tail
    reports = []
    ShardWriter.open(folder, on_corrupt=reports.append).close()
    assert [(r.torn_tail, r.offset, r.length) for r in reports] == [(True, end, 4096)]
    assert path.stat().st_size == end


def test_a_file_that_is_not_a_shard_is_refused(tmp_path):
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "000001.shard").write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(UserInputError, match=r"000001\.shard is not a Magnet shard file"):
        list(iter_folder(folder))


def test_failed_write_keeps_earlier_frames_and_truncates_the_partial_one(tmp_path, monkeypatch):
    folder = tmp_path / "k"
    writer = ShardWriter.open(folder)
    for p in payloads(10):
        writer.append(p)
    writer.flush()
    good_size = writer.current_path.stat().st_size

    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))  # the disk takes half, then fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "write", half_then_enospc)
    for p in payloads(20)[10:]:
        writer.append(p)
    with pytest.raises(ShardWriteError) as info:
        writer.write_out()
    assert info.value.errno == errno.ENOSPC and info.value.path == writer.current_path
    assert writer.current_path.stat().st_size == good_size  # partial frame already cut off
    with pytest.raises(ShardWriteError):
        writer.append(b"more")  # a broken writer refuses to go on
    writer.close()
    monkeypatch.undo()
    assert list(iter_folder(folder)) == payloads(10)


def test_open_files_stay_bounded_across_many_rotations(tmp_path):
    writer = ShardWriter.open(tmp_path / "k", shard_bytes=256)
    before = len(os.listdir("/proc/self/fd"))
    for i, p in enumerate(payloads(400)):
        writer.append(p)
        if i % 10 == 0:
            writer.write_out()  # no sync in between: rotated files must still be closed
    writer.write_out()
    assert len(shard_files(tmp_path / "k")) > 100
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    writer.close()
    assert list(iter_folder(tmp_path / "k")) == payloads(400)


def test_a_damaged_length_pointing_at_a_later_frame_skips_nothing_good(tmp_path):
    folder = tmp_path / "k"
    items = [b"a" * 10, b"b" * 20, b"c" * 30, b"d" * 40]
    write(folder, items)
    path = shard_files(folder)[0]
    offs = frame_offsets(path)
    # Frame 1's length now covers frame 2 too: it points exactly at frame 3.
    _damage(path, offs[1] + 4, struct.pack("<I", offs[3] - offs[1] - FRAME_OVERHEAD))
    reports = []
    assert list(iter_folder(folder, reports.append)) == [items[0], items[2], items[3]]
    assert [(r.offset, r.length) for r in reports] == [(offs[1], offs[2] - offs[1])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=80), min_size=2, max_size=25),
    damage_at=st.floats(min_value=0, max_value=1, exclude_max=True),
    damage=st.binary(min_size=1, max_size=6),
)
def test_random_damage_never_loses_an_untouched_frame(tmp_path_factory, sizes, damage_at, damage):
    folder = tmp_path_factory.mktemp("k")
    items = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    write(folder, items)
    path = shard_files(folder)[0]
    offs = frame_offsets(path)
    spans = [(o, o + FRAME_OVERHEAD + len(p)) for o, p in zip(offs, items)]
    start = len(HEADER) + int(damage_at * (path.stat().st_size - len(HEADER)))
    original = path.read_bytes()
    _damage(path, start, damage)
    end = start + len(damage)
    changed = path.read_bytes()[: len(original)] != original
    reports = []
    got = list(iter_folder(folder, reports.append))
    untouched = [p for p, (a, b) in zip(items, spans) if b <= start or a >= end]
    it = iter(got)
    assert all(any(g == p for g in it) for p in untouched)  # every untouched frame, in order
    assert all(g in items for g in got)  # and nothing that was never written
    assert bool(reports) == (changed or path.stat().st_size > len(original))
