"""Append-only shard files of CRC-checked msgpack frames: writer, streaming reader, recovery.

File layout::

    header   b"MGNTSHRD" + u32 LE format version + u32 LE flags (0)          16 bytes
    frame*   SYNC (4 bytes) + u32 LE payload length + u32 LE CRC32(payload) + payload

Why a per-frame sync marker: a length prefix alone cannot be re-found after it is damaged,
so a reader that meets a bad frame would have to try every byte offset. With the marker,
resync is ``bytes.find(SYNC)`` followed by the length and CRC checks, which reject the rare
false hits (the marker bytes inside a payload) with probability 1 - 2^-32. The marker starts
and ends with 0xC1, a byte msgpack never emits as a type tag and UTF-8 never contains, so
hits inside ordinary records are rarer still. When a damaged frame's length still points at a
valid frame, that frame is preferred over a hit inside the damaged payload unless the hit
chains up to it (see ``_resync``), so neither a damaged length nor a payload embedding
frame-shaped bytes makes the reader skip good frames or yield ghosts.

A bad frame followed by a valid one is *corruption*: reported with file and byte offset,
skipped, and everything after it is still read. Bad bytes with no valid frame after them are
a *torn tail* (a crash while appending); readers report it as such, and ``ShardWriter.open``
truncates it so the next append lands on a clean frame boundary.

Files in a folder are named ``000001.shard``, ``000002.shard``, ...; the writer rotates to
the next number when a file would grow past ``shard_bytes``. Writes are buffered in memory
and reach the OS only in ``write_out`` (the caller decides when, which lets the run store
order its writes across folders), and the disk only in ``sync``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from engine.atomic import fsync_dir
from engine.errors import UserInputError

MAGIC = b"MGNTSHRD"
FORMAT_VERSION = 1
HEADER = MAGIC + struct.pack("<II", FORMAT_VERSION, 0)
SYNC = b"\xc1MG\xc1"
_FRAME_HEAD = struct.Struct("<4sII")  # sync, length, crc
FRAME_OVERHEAD = _FRAME_HEAD.size
MAX_PAYLOAD = 1 << 30  # a length above this is damage, not a record
SHARD_SUFFIX = ".shard"
_SHARD_NAME = re.compile(r"^(\d{6,})\.shard$")
_CHUNK = 1 << 20


class Corruption(msgspec.Struct, kw_only=True, frozen=True):
    """Bytes a reader skipped: ``length`` bytes of ``path`` starting at byte ``offset``."""

    path: str
    offset: int
    length: int
    reason: str
    torn_tail: bool = False  # nothing valid follows: a crash while appending, truncated on resume

    def describe(self) -> str:
        what = "torn tail" if self.torn_tail else "corrupted frame"
        return f"{what} in {self.path} at byte {self.offset} ({self.length} bytes skipped): {self.reason}"


OnCorrupt = Callable[[Corruption], None]


class ShardWriteError(OSError):
    """The OS refused a shard write; ``path`` is the file, the cause is chained."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(err.errno, err.strerror or str(err), str(path))
        self.path = path


def shard_files(folder: Path) -> list[Path]:
    """The folder's shard files in write order (by number)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SHARD_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


class _Window:
    """A sliding read buffer over a file of fixed size, for sequential frames and forward scans."""

    def __init__(self, f, size: int):
        self.f = f
        self.size = size
        self.start = 0
        self.buf = b""

    def get(self, off: int, n: int) -> bytes:
        end = off + n
        have_end = self.start + len(self.buf)
        if off < self.start or end > have_end:
            keep = self.buf[off - self.start :] if self.start <= off < have_end else b""
            self.f.seek(off + len(keep))
            want = min(max(n, _CHUNK) - len(keep), self.size - off - len(keep))
            self.buf = keep + self.f.read(max(want, 0))
            self.start = off
        return self.buf[off - self.start : end - self.start]

    def find(self, pattern: bytes, off: int) -> int:
        while off + len(pattern) <= self.size:
            chunk = self.get(off, min(_CHUNK, self.size - off))
            i = chunk.find(pattern)
            if i >= 0:
                return off + i
            off += len(chunk) - len(pattern) + 1
        return -1


def _frame_at(win: _Window, pos: int) -> tuple[bytes | None, str, int]:
    """(payload, "", length) for a valid frame at ``pos``, else (None, reason, length or -1)."""
    if pos + FRAME_OVERHEAD > win.size:
        return None, f"{win.size - pos} bytes left, less than a frame header", -1
    sync, length, crc = _FRAME_HEAD.unpack(win.get(pos, FRAME_OVERHEAD))
    if sync != SYNC:
        return None, "no frame marker", -1
    if length > MAX_PAYLOAD or pos + FRAME_OVERHEAD + length > win.size:
        return None, f"frame length {length} runs past the end of the file", -1
    payload = win.get(pos + FRAME_OVERHEAD, length)
    if zlib.crc32(payload) != crc:
        return None, "CRC mismatch", length
    return payload, "", length


def _chain_reaches(win: _Window, pos: int, target: int) -> bool:
    """Do valid frames follow each other from ``pos`` exactly to ``target``?"""
    while pos < target:
        payload, _, length = _frame_at(win, pos)
        if payload is None:
            return False
        pos += FRAME_OVERHEAD + length
    return pos == target


def _resync(win: _Window, pos: int, length: int) -> int:
    """Offset of the next valid frame after the bad one at ``pos``, or -1 if none.

    Two candidates: the first valid frame a scan finds after ``pos``, and, when the bad
    frame's header was readable, the offset its length points to. They disagree only when
    the scan lands inside the bad frame's claimed payload: either its length was damaged
    (then the frames found by the scan chain up exactly to the pointed offset: keep them) or
    the payload embeds frame-shaped bytes (they do not chain up: skip the whole payload).
    """
    pointed = pos + FRAME_OVERHEAD + length if length >= 0 else -1
    if pointed >= 0 and _frame_at(win, pointed)[0] is None:
        pointed = -1
    cand = win.find(SYNC, pos + 1)
    while cand >= 0 and (pointed < 0 or cand < pointed):
        if _frame_at(win, cand)[0] is not None:
            return cand if pointed < 0 or _chain_reaches(win, cand, pointed) else pointed
        cand = win.find(SYNC, cand + 1)
    return pointed


def _check_header(path: Path, head: bytes) -> None:
    if head[: len(MAGIC)] != MAGIC[: len(head)]:
        raise UserInputError(f"{path} is not a Magnet shard file (bad magic); move it out of the run directory")
    if len(head) == len(HEADER):
        version = struct.unpack_from("<I", head, len(MAGIC))[0]
        if version != FORMAT_VERSION:
            raise UserInputError(
                f"{path} has shard format version {version}, this code reads {FORMAT_VERSION}; "
                "use a matching magnet version or export the run with the version that wrote it"
            )


def iter_frames(path: Path, on_corrupt: OnCorrupt | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, payload) of every valid frame in one file, reporting skipped bytes.

    Reads the file as it was sized when iteration began, so a file still being appended to
    is read up to that point (its incomplete last frame shows up as a torn tail).
    """
    report = on_corrupt or (lambda c: None)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(HEADER))
        _check_header(path, head)
        if len(head) < len(HEADER):
            if head:
                report(Corruption(path=str(path), offset=0, length=len(head), reason="incomplete file header", torn_tail=True))
            return
        win = _Window(f, size)
        pos = len(HEADER)
        unpack, crc32 = _FRAME_HEAD.unpack_from, zlib.crc32
        while pos < size:
            # Fast path: a whole, valid frame inside the current window (nearly every frame).
            rel = pos - win.start
            buf = win.buf
            if 0 <= rel and rel + FRAME_OVERHEAD <= len(buf):
                sync, length, crc = unpack(buf, rel)
                end = rel + FRAME_OVERHEAD + length
                if sync == SYNC and end <= len(buf):
                    payload = buf[rel + FRAME_OVERHEAD : end]
                    if crc32(payload) == crc:
                        yield pos, payload
                        pos += FRAME_OVERHEAD + length
                        continue
            payload, reason, length = _frame_at(win, pos)
            if payload is not None:
                yield pos, payload
                pos += FRAME_OVERHEAD + length
                continue
            nxt = _resync(win, pos, length)
            tail = nxt < 0
            end = size if tail else nxt
            report(Corruption(path=str(path), offset=pos, length=end - pos, reason=reason, torn_tail=tail))
            pos = end


def read_frame_at(fd: int, path: Path, offset: int) -> bytes:
    """The payload of the frame at ``offset`` (an offset ``iter_frames`` yielded) of an open file.
    A frame that no longer checks out (the file changed since) is bad input, not a crash."""
    head = os.pread(fd, FRAME_OVERHEAD, offset)
    if len(head) == FRAME_OVERHEAD:
        sync, length, crc = _FRAME_HEAD.unpack(head)
        payload = os.pread(fd, length, offset + FRAME_OVERHEAD) if sync == SYNC else b""
        if sync == SYNC and len(payload) == length and zlib.crc32(payload) == crc:
            return payload
    raise UserInputError(f"{path} changed while it was being read (no valid frame at byte {offset}); "
                         "wait for the writer to finish, then run the command again")


def iter_folder(folder: Path, on_corrupt: OnCorrupt | None = None) -> Iterator[bytes]:
    """Payloads of every shard file in a folder, in write order."""
    for path in shard_files(folder):
        for _, payload in iter_frames(path, on_corrupt):
            yield payload


def _valid_end(path: Path, on_payload: Callable[[bytes], None] | None, on_corrupt: OnCorrupt | None) -> tuple[int, Corruption | None]:
    """Read a file through, feeding payloads; return (end of its last valid frame, torn tail or None)."""
    end = 0
    torn: Corruption | None = None

    def note(c: Corruption) -> None:
        nonlocal torn
        if c.torn_tail:
            torn = c
        elif on_corrupt:
            on_corrupt(c)

    for off, payload in iter_frames(path, note):
        if on_payload:
            on_payload(payload)
        end = off + FRAME_OVERHEAD + len(payload)
    return (end or len(HEADER)), torn


class ShardWriter:
    """Buffered appender for one folder of shard files. Not thread-safe; one writer per folder.

    ``append`` only buffers. ``write_out`` hands buffered frames to the OS (they then survive
    the process being killed); ``sync`` fsyncs them (they then survive power loss). A failed
    OS write truncates the file back to its last complete frame when it can and raises
    ``ShardWriteError``; the writer then refuses further use.
    """

    def __init__(self, folder: Path, *, shard_bytes: int = 64 << 20):
        if shard_bytes < len(HEADER) + FRAME_OVERHEAD + 1:
            raise ValueError(f"shard_bytes={shard_bytes} is too small for even one frame")
        self.folder = folder
        self.shard_bytes = shard_bytes
        self._number = 0
        self._fd = -1
        self._path: Path | None = None
        self._disk_end = 0  # bytes of the current file that the OS has
        self._buf = bytearray()
        self._closed_segments: list[tuple[int, Path, int, bytearray]] = []  # rotated-away files not yet written out
        self._unsynced: list[Path] = []  # rotated-away files written out (and closed) but not fsynced
        self._dirty = False  # the current file was written since the last sync
        self._broken: ShardWriteError | None = None
        self._new_file = False  # a file was created since the last sync: fsync the folder entry too

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        shard_bytes: int = 64 << 20,
        on_payload: Callable[[bytes], None] | None = None,
        on_corrupt: OnCorrupt | None = None,
    ) -> ShardWriter:
        """Open a folder for appending, creating it if needed.

        Reads every existing file once: ``on_payload`` receives each valid payload (so a caller
        can rebuild its indexes in the same pass), ``on_corrupt`` each damaged span in the
        middle of a file and each torn tail, which is then truncated.
        """
        folder.mkdir(parents=True, exist_ok=True)
        writer = cls(folder, shard_bytes=shard_bytes)
        files = shard_files(folder)
        for path in files:
            end, torn = _valid_end(path, on_payload, on_corrupt)
            if torn is not None and on_corrupt:
                on_corrupt(torn)
            if path.stat().st_size != end:  # a torn tail, or a file created but never written
                with open(path, "r+b") as f:
                    f.truncate(end)
                    if end == len(HEADER):
                        f.seek(0)
                        f.write(HEADER)
                    os.fsync(f.fileno())
        if files:
            last = files[-1]
            writer._number = int(_SHARD_NAME.match(last.name).group(1))
            writer._attach(last)
        return writer

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet handed to the OS."""
        return len(self._buf) + sum(len(seg[3]) for seg in self._closed_segments)

    @property
    def current_path(self) -> Path | None:
        return self._path

    def append(self, payload: bytes) -> None:
        if self._broken:
            raise self._broken
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"record of {n} bytes exceeds the {MAX_PAYLOAD}-byte frame limit")
        size = self._disk_end + len(self._buf)
        if self._fd < 0 or (size > len(HEADER) and size + FRAME_OVERHEAD + n > self.shard_bytes):
            self._rotate()
        self._buf += _FRAME_HEAD.pack(SYNC, n, zlib.crc32(payload))
        self._buf += payload

    def write_out(self) -> None:
        """Hand every buffered frame to the OS, oldest file first."""
        if self._broken:
            raise self._broken
        while self._closed_segments:
            fd, path, disk_end, buf = self._closed_segments[0]
            self._write(fd, path, disk_end, buf)
            self._closed_segments.pop(0)
            os.close(fd)  # reopened by path for fsync: keeps open files bounded however many rotations
            self._unsynced.append(path)
        if self._buf:
            self._write(self._fd, self._path, self._disk_end, self._buf)
            self._disk_end += len(self._buf)
            self._buf = bytearray()
            self._dirty = True

    def sync(self) -> None:
        """fsync every file written since the last sync (after ``write_out``)."""
        while self._unsynced:
            fd = os.open(self._unsynced[0], os.O_RDONLY)  # fsync flushes the file, whichever fd names it
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._unsynced.pop(0)
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        if self._new_file:
            fsync_dir(self.folder)
            self._new_file = False

    def flush(self, *, fsync: bool = True) -> None:
        self.write_out()
        if fsync:
            self.sync()

    def close(self, *, flush: bool = True, fsync: bool = True) -> None:
        """Write out (and fsync) what is buffered, then close. With ``flush=False``, or after a
        failed write, buffered frames are dropped: a caller that orders writes across writers
        must not have one writer's buffer land after another one failed."""
        try:
            if flush and not self._broken:
                self.flush(fsync=fsync)
        finally:
            for fd in [seg[0] for seg in self._closed_segments] + [self._fd]:
                if fd >= 0:
                    os.close(fd)
            self._closed_segments, self._unsynced, self._fd = [], [], -1

    def _attach(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._path = path
        self._disk_end = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        if self._fd >= 0:
            self._closed_segments.append((self._fd, self._path, self._disk_end, self._buf))
        self._number += 1
        path = self.folder / f"{self._number:06d}{SHARD_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._path = path
        self._disk_end = 0
        self._buf = bytearray(HEADER)
        self._new_file = True

    def _write(self, fd: int, path: Path, disk_end: int, buf: bytearray) -> None:
        view = memoryview(buf)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError as err:
            try:  # drop the partial frame now; if this fails too, the next open truncates it
                os.ftruncate(fd, disk_end)
            except OSError:
                pass
            self._broken = ShardWriteError(path, err)
            raise self._broken from err
        finally:
            view.release()


def _rewrite_names(folder: Path) -> tuple[Path, Path, Path]:
    """(being written, complete replacement, previous content) beside ``folder``."""
    return tuple(folder.with_name(f"{folder.name}.{tag}") for tag in ("rewriting", "ready", "replaced"))  # type: ignore[return-value]


def rewrite_folder(folder: Path, payloads: Iterable[bytes], *, shard_bytes: int = 64 << 20) -> None:
    """Replace a folder's shard files with ``payloads`` so that a crash at any point leaves either
    the old content or the new, never a mix: the new files are written and fsynced in a side
    folder, which is renamed to ``.ready`` only when complete; the swap that follows is redone
    by ``finish_rewrite`` (which every open of a run calls) if it was cut short."""
    writing, ready, _ = _rewrite_names(folder)
    shutil.rmtree(writing, ignore_errors=True)
    writer = ShardWriter.open(writing, shard_bytes=shard_bytes)
    try:
        for payload in payloads:
            writer.append(payload)
        writer.flush(fsync=True)
    finally:
        writer.close(flush=False)
    fsync_dir(writing)
    os.rename(writing, ready)
    fsync_dir(folder.parent)
    finish_rewrite(folder)


def finish_rewrite(folder: Path) -> None:
    """Complete or undo a ``rewrite_folder`` that a crash interrupted (a no-op otherwise)."""
    writing, ready, replaced = _rewrite_names(folder)
    if writing.exists():  # never completed: the folder itself was not touched yet
        shutil.rmtree(writing)
    if ready.exists():
        if folder.exists():
            os.rename(folder, replaced)
        os.rename(ready, folder)
        fsync_dir(folder.parent)
    if replaced.exists():
        shutil.rmtree(replaced)


def is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)
