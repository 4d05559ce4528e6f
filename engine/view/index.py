"""The paging index of a run: where each record lies and the few fields the viewer filters on.

Why an index of our own: a run may hold a million records in gigabytes of shards, and the
records list must show its first page in well under two seconds without loading them. So each
record kind gets a ``KindIndex``, built lazily (on the first request for that kind) by one
background thread that streams the shards once, decoding only the filter fields, while
requests are served from what is indexed so far: the first page of an unfiltered list needs
only the first records scanned.

Memory is a few compact arrays per kind, no record objects: per record the shard file number
(2 bytes), the frame offset (8), a hash of the id (8, for lookup by id) and a 2-byte code per
single-valued field; multi-valued fields (toolkits, functions, teachers, error types) keep a
posting list (4 bytes per value) per distinct value. ``nbytes`` reports the total; a test
bounds it per record.

Order is write order (shard file, then offset): stable while a live run appends, so a cursor
(a position) stays valid as the index grows. For a run still being written, ``refresh``
notices grown or new shard files and indexes just the new frames; a folder rewritten in place
(a requeue replaces ``dead_letters/``) is indexed again from scratch.

Filters are exact values (their vocabulary and counts are kept for the filter menus); text
search is a case-insensitive (ASCII) substring scan over the raw frames of the candidates,
bounded per request by a time budget and resumable from where it stopped.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from engine.reasons import reason_key
from engine.records import RECORD_KINDS
from engine.shards import FRAME_OVERHEAD, Corruption, iter_frames, read_frame_at, shard_files

# Filters per record kind. Multi-valued fields (a record has several) are in MULTI.
FILTERS: dict[str, tuple[str, ...]] = {
    "paths": ("path_kind", "stratum", "toolkit", "function"),
    "episodes": ("path_kind", "stratum", "toolkit", "function"),
    "trajectories": ("path_kind", "stratum", "polarity", "verified", "teacher", "source", "toolkit", "function", "error_type"),
    "pairs": ("path_kind", "stratum", "verified", "teacher", "source", "toolkit", "function", "error_type"),
    "dead_letters": ("path_kind", "stratum", "stage", "reason"),
    "done": (),
}
MULTI = frozenset({"toolkit", "function", "teacher", "error_type"})
_MAX_CODES = 65535  # single-valued codes are 2 bytes; later new values share one code
OTHER = "(other)"
_CHECK_EVERY_S = 2.0  # a live run's shards are looked at again at most this often
_MAX_DAMAGE = 100  # damaged spans kept for the overview (the count is kept whole)
_SEARCH_CHUNK = 8 << 20  # bytes of shard read (and searched) at once by a text search


# -- the fields each kind is indexed by (partial decoding: msgspec skips the rest) -------------------

class _Tool(msgspec.Struct):
    toolkit: str = ""


class _Call(msgspec.Struct):
    name: str = ""


class _Msg(msgspec.Struct):
    tool_calls: list[_Call] = []


class _Verification(msgspec.Struct):
    ok: bool = False


class _PathTurn(msgspec.Struct):
    functions: list[str] = []


class _EpisodeTurn(msgspec.Struct):
    calls: list[_Call] = []


class _PathRow(msgspec.Struct):
    id: str
    kind: str = ""
    toolkits: list[str] = []
    turns: list[_PathTurn] = []


class _EpisodeRow(msgspec.Struct):
    id: str
    path_id: str = ""
    kind: str = ""
    toolkits: list[str] = []
    turns: list[_EpisodeTurn] = []


class _TrajRow(msgspec.Struct):
    id: str
    episode_id: str = ""
    polarity: str = ""
    teacher: str = ""
    source: str = ""
    tools: list[_Tool] = []
    messages: list[_Msg] = []
    error_types: list[str] = []
    verification: _Verification | None = None


class _PairRow(msgspec.Struct):
    id: str
    episode_id: str = ""
    chosen: _TrajRow | None = None
    rejected: _TrajRow | None = None


class _DeadRow(msgspec.Struct):
    id: str
    item_id: str = ""
    stage: str = ""
    error: str = ""


class _IdRow(msgspec.Struct):
    id: str


def stratum_of(path_id: str) -> str:
    """``multi_turn.long-0-12`` -> ``multi_turn.long``: path ids are ``<stratum>-<seed>-<index>``
    (distill.strata.stratum_of_id; restated so indexing does not import the distill stage)."""
    parts = path_id.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else path_id


def _path_id(record_id: str) -> str:
    """Episode ids are ``ep-<path id>``; a dead letter's item may carry a ``#step`` suffix."""
    return record_id.removeprefix("ep-").split("#", 1)[0]


def _verified(v: _Verification | None) -> str:
    return "unverified" if v is None else ("passed" if v.ok else "failed")


def _called(messages: list[_Msg]) -> list[str]:
    return [c.name for m in messages for c in m.tool_calls]


def _distinct(values: Any) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _row_paths(r: _PathRow) -> dict[str, Any]:
    stratum = stratum_of(r.id)
    return {"path_kind": r.kind, "stratum": stratum, "toolkit": r.toolkits,
            "function": _distinct(f for t in r.turns for f in t.functions)}


def _row_episodes(r: _EpisodeRow) -> dict[str, Any]:
    return {"path_kind": r.kind, "stratum": stratum_of(r.path_id or _path_id(r.id)), "toolkit": r.toolkits,
            "function": _distinct(c.name for t in r.turns for c in t.calls)}


def _traj_fields(t: _TrajRow) -> dict[str, Any]:
    stratum = stratum_of(_path_id(t.episode_id))
    return {"path_kind": stratum.split(".", 1)[0], "stratum": stratum, "polarity": t.polarity,
            "verified": _verified(t.verification), "teacher": [t.teacher], "source": t.source,
            "toolkit": _distinct(x.toolkit for x in t.tools), "function": _distinct(_called(t.messages)),
            "error_type": _distinct(t.error_types)}


def _row_pairs(p: _PairRow) -> dict[str, Any]:
    chosen, rejected = p.chosen or _TrajRow(id=""), p.rejected or _TrajRow(id="")
    out = _traj_fields(rejected)  # what a pair is about: how its rejected side went wrong
    out.pop("polarity")
    stratum = stratum_of(_path_id(p.episode_id))
    out.update(path_kind=stratum.split(".", 1)[0], stratum=stratum, teacher=_distinct([chosen.teacher, rejected.teacher]),
               toolkit=_distinct([*(x.toolkit for x in chosen.tools), *out["toolkit"]]),
               function=_distinct([*_called(chosen.messages), *out["function"]]))
    return out


def _row_dead(d: _DeadRow) -> dict[str, Any]:
    stratum = stratum_of(_path_id(d.item_id))
    return {"path_kind": stratum.split(".", 1)[0], "stratum": stratum, "stage": d.stage, "reason": reason_key(d.error)}


_ROWS: dict[str, tuple[type, Callable[[Any], dict[str, Any]]]] = {
    "paths": (_PathRow, _row_paths),
    "episodes": (_EpisodeRow, _row_episodes),
    "trajectories": (_TrajRow, _traj_fields),
    "pairs": (_PairRow, _row_pairs),
    "dead_letters": (_DeadRow, _row_dead),
    "done": (_IdRow, lambda r: {}),
}


def _extractor(kind: str) -> tuple[Callable[[bytes], Any], Callable[[Any], dict[str, Any]]]:
    typ, fields = _ROWS[kind]
    return msgspec.msgpack.Decoder(typ).decode, fields


def _contains(postings: array, pos: int) -> bool:
    i = bisect_left(postings, pos)
    return i < len(postings) and postings[i] == pos


class Page(msgspec.Struct, kw_only=True):
    """Positions of one page of matches, and where the pages before and after start."""

    positions: list[int]
    next_start: int | None  # first position of the next page; None at the end
    prev_start: int | None  # first position of the previous page; None on the first
    complete: bool  # the index covered the whole run when the page was cut
    search_stopped_at: int | None = None  # a text search ran out of time before this position


class KindIndex:
    """The index of one record kind (one shard folder). Thread-safe: one indexing thread writes,
    request threads read what has been published (positions below ``n``)."""

    def __init__(self, run_dir: Path, kind: str):
        if kind not in RECORD_KINDS:
            raise KeyError(kind)
        self.kind = kind
        self.folder = run_dir / kind
        self.fields = FILTERS[kind]
        self.files: list[Path] = []
        self.file_no = array("H")
        self.offset = array("Q")
        self.id_hash = array("q")
        self.codes: dict[str, array] = {f: array("H") for f in self.fields if f not in MULTI}
        self.postings: dict[str, dict[int, array]] = {f: {} for f in self.fields if f in MULTI}
        self.vocab: dict[str, list[str]] = {f: [] for f in self.fields}
        self._code_of: dict[str, dict[str, int]] = {f: {} for f in self.fields}
        self.value_counts: dict[str, list[int]] = {f: [] for f in self.fields}
        self.n = 0  # records published (readable)
        self.damage: list[Corruption] = []
        self.damaged = 0
        self.complete = False
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self._scanned: dict[str, tuple[int, int]] = {}  # file name -> (inode, end of its last indexed frame)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_check = 0.0
        self._fds: dict[int, int] = {}
        self._fd_lock = threading.Lock()
        self.stale = False  # the folder was rewritten: the owner replaces this index
        # Per field, what _add needs, looked up once: (name, multi-valued, value -> code, counts, codes or postings).
        self._slots = [(f, f in MULTI, self._code_of[f], self.value_counts[f], self.postings[f] if f in MULTI else self.codes[f])
                       for f in self.fields]

    # -- building ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self.complete = False
                self._thread = threading.Thread(target=self._scan, name=f"view-index-{self.kind}", daemon=True)
                self._thread.start()

    def _code(self, field: str, value: str) -> int:
        codes = self._code_of[field]
        code = codes.get(value)
        if code is None:
            vocab = self.vocab[field]
            if len(vocab) >= _MAX_CODES and field not in MULTI:
                return self._code(field, OTHER) if value != OTHER else len(vocab) - 1
            code = codes[value] = len(vocab)
            vocab.append(value)
            self.value_counts[field].append(0)
        return code

    def _scan(self) -> None:
        decode, fields_of = _extractor(self.kind)
        decode_id = msgspec.msgpack.Decoder(_IdRow).decode
        try:
            files = shard_files(self.folder)
            for path in files:
                inode, done_end = self._scanned.get(path.name, (None, 0))
                st = path.stat()
                if inode is not None and inode != st.st_ino:
                    self.stale = True  # rewritten in place: positions no longer point at the same records
                    return
                if path not in self.files:
                    self.files.append(path)
                n_file = self.files.index(path)
                end = done_end
                for offset, payload in iter_frames(path, self._note_damage):
                    if offset < done_end:
                        continue
                    end = offset + FRAME_OVERHEAD + len(payload)
                    try:
                        row = decode(payload)
                        values = fields_of(row)
                        rid = row.id
                    except msgspec.DecodeError:
                        try:
                            rid, values = decode_id(payload).id, {}
                        except msgspec.DecodeError as err:
                            self._note_damage(Corruption(path=str(path), offset=offset, length=len(payload),
                                                         reason=f"not a {self.kind} record: {err}"))
                            continue
                    self._add(n_file, offset, rid, values)
                self._scanned[path.name] = (st.st_ino, max(end, done_end))
        finally:
            with self._cond:
                self.complete = True
                self.finished_at = time.monotonic()
                self._last_check = time.monotonic()
                self._cond.notify_all()

    def _add(self, n_file: int, offset: int, rid: str, values: dict[str, Any]) -> None:
        pos = self.n
        self.file_no.append(n_file)
        self.offset.append(offset)
        self.id_hash.append(hash(rid))
        for field, multi, code_of, counts, target in self._slots:
            value = values.get(field)
            if multi:
                for v in value or ():
                    code = code_of.get(v)
                    if code is None:
                        code = self._code(field, str(v))
                    counts[code] += 1
                    lst = target.get(code)
                    if lst is None:
                        lst = target[code] = array("I")
                    lst.append(pos)
            else:
                if value is None or value == "":
                    value = "(none)"
                code = code_of.get(value)
                if code is None:
                    code = self._code(field, str(value))
                counts[code] += 1
                target.append(code)
        self.n = pos + 1  # published after every array holds the record (one store: atomic under the GIL)
        if pos % 1024 == 0:
            with self._cond:
                self._cond.notify_all()

    def _note_damage(self, c: Corruption) -> None:
        if c.torn_tail:
            return  # a live writer's unfinished frame (or a crash's): the next refresh picks it up
        self.damaged += 1
        if len(self.damage) < _MAX_DAMAGE:
            self.damage.append(c)

    def refresh(self) -> None:
        """Index frames appended since the last scan (a live run); at most every few seconds."""
        now = time.monotonic()
        if not self.complete or now - self._last_check < _CHECK_EVERY_S:
            return
        self._last_check = now
        for path in shard_files(self.folder):
            seen = self._scanned.get(path.name)
            try:
                st = path.stat()
            except FileNotFoundError:
                self.stale = True
                return
            if seen is None or seen[0] != st.st_ino or st.st_size > seen[1]:
                if seen is not None and seen[0] != st.st_ino:
                    self.stale = True
                    return
                self.start()
                return
        if any(not (self.folder / name).exists() for name in self._scanned):
            self.stale = True

    # -- reading ----------------------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes held by the index arrays (the vocabularies, a few strings per value, excluded)."""
        arrays = [self.file_no, self.offset, self.id_hash, *self.codes.values()]
        arrays += [lst for postings in self.postings.values() for lst in postings.values()]
        return sum(a.itemsize * len(a) for a in arrays)

    def values(self, field: str) -> list[tuple[str, int]]:
        """(value, records) of a filter field, most frequent first."""
        vocab, counts = self.vocab[field], self.value_counts[field]
        return sorted(zip(vocab[: len(counts)], counts), key=lambda vc: (-vc[1], vc[0]))

    def _fd(self, n_file: int) -> int:
        with self._fd_lock:
            fd = self._fds.get(n_file)
            if fd is None:
                fd = self._fds[n_file] = os.open(self.files[n_file], os.O_RDONLY)
            return fd

    def read(self, pos: int) -> bytes:
        n_file = self.file_no[pos]
        return read_frame_at(self._fd(n_file), self.files[n_file], self.offset[pos])

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def lookup(self, record_id: str, *, wait_s: float = 30.0) -> int | None:
        """Position of the record with this id (waiting for the index to reach it), or None."""
        h, decode = hash(record_id), msgspec.msgpack.Decoder(_IdRow).decode
        start, deadline = 0, time.monotonic() + wait_s
        while True:
            n, complete = self.n, self.complete
            while start < n:
                try:
                    pos = self.id_hash.index(h, start, n)
                except ValueError:
                    break
                if decode(self.read(pos)).id == record_id:
                    return pos
                start = pos + 1  # a hash collision
            start = n
            if complete or time.monotonic() > deadline:
                return None
            self._wait(n, deadline)

    def wait_complete(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.complete, timeout=max(0.0, timeout_s))

    def _wait(self, n: int, deadline: float) -> None:
        with self._cond:
            if self.n == n and not self.complete:
                self._cond.wait(timeout=max(0.0, min(0.25, deadline - time.monotonic())))

    def _resolve(self, filters: dict[str, str]) -> tuple[list[tuple[array, int]], list[array]] | None:
        """(single-field code checks, posting lists) for the filters; None when a value has no
        record yet (no match so far)."""
        checks, lists = [], []
        for field, value in filters.items():
            code = self._code_of[field].get(value)
            if code is None:
                return None
            if field in MULTI:
                lists.append(self.postings[field].get(code, array("I")))
            else:
                checks.append((self.codes[field], code))
        return checks, lists

    def _matches(self, filters: dict[str, str], lo: int, hi: int, backward: bool) -> Iterator[int]:
        """Matching positions in [lo, hi), ascending (or descending)."""
        resolved = self._resolve(filters)
        if resolved is None:
            return
        checks, lists = resolved
        if lists:
            base = min(lists, key=len)
            others = [lst for lst in lists if lst is not base]
            i0, i1 = bisect_left(base, lo), bisect_left(base, hi)
            candidates: Iterator[int] = (base[i] for i in (range(i1 - 1, i0 - 1, -1) if backward else range(i0, i1)))
        else:
            others = []
            candidates = iter(range(hi - 1, lo - 1, -1) if backward else range(lo, hi))
        for pos in candidates:
            if self._accept(checks, others, pos):
                yield pos

    @staticmethod
    def _accept(checks: list[tuple[array, int]], lists: list[array], pos: int) -> bool:
        return all(a[pos] == c for a, c in checks) and all(_contains(lst, pos) for lst in lists)

    def page(self, filters: dict[str, str], start: int, size: int, *, text: str = "", wait_s: float = 10.0,
             search_budget_s: float = 1.5) -> Page:
        """Up to ``size`` matches at positions >= ``start``. Waits (up to ``wait_s``) while the
        index is still being built and has not found a full page yet; a text search stops after
        ``search_budget_s`` and says where to go on from."""
        self._check(filters)
        needle = text.lower().encode() if text else b""
        found: list[int] = []
        pos, now = start, time.monotonic()
        deadline, search_deadline = now + wait_s, now + search_budget_s
        stop: list[int] = []
        while True:
            n, complete = self.n, self.complete
            if needle:
                resolved = self._resolve(filters)
                hits = (p for p in self._text_hits(needle, pos, n, search_deadline, stop)
                        if resolved is not None and self._accept(*resolved, p))
            else:
                hits = self._matches(filters, pos, n, False)
            for p in hits:
                found.append(p)
                if len(found) > size:
                    break
            if len(found) > size or stop or complete or time.monotonic() > deadline:
                break
            pos = n
            self._wait(n, deadline)
        stopped = stop[0] if stop and len(found) <= size else None
        nxt = found[size] if len(found) > size else stopped
        prev = self._prev_start(filters, start, size) if not needle else None
        return Page(positions=found[:size], next_start=nxt, prev_start=prev, complete=complete and nxt is None,
                    search_stopped_at=stopped)

    def _text_hits(self, needle: bytes, lo: int, hi: int, deadline: float, stop: list[int]) -> Iterator[int]:
        """Positions in [lo, hi) whose record contains ``needle`` (ASCII case folded), ascending.

        Reads the shards in large chunks and searches the bytes (fast: no decoding, no per-record
        read), maps each hit to the frame holding it, and confirms it inside that frame's payload.
        Past ``deadline`` it stops, putting the position to go on from into ``stop``."""
        file_no, offset = self.file_no, self.offset
        first, scanned = lo, False
        while lo < hi:
            f = file_no[lo]
            f_hi = bisect_left(file_no, f + 1, lo, hi)  # this file's positions: [lo, f_hi)
            fd = self._fd(f)
            head = os.pread(fd, FRAME_OVERHEAD, offset[f_hi - 1])
            begin, end = offset[lo], offset[f_hi - 1] + FRAME_OVERHEAD + int.from_bytes(head[4:8], "little")
            last = lo - 1
            while begin < end:
                if scanned and time.monotonic() > deadline:
                    resume = max(last + 1, bisect_right(offset, begin, lo, f_hi) - 1)
                    if resume > first:  # always some progress, however small the budget
                        stop.append(resume)
                        return
                chunk = os.pread(fd, min(_SEARCH_CHUNK, end - begin), begin).lower()
                scanned = True
                i = chunk.find(needle)
                while i >= 0:
                    p = bisect_right(offset, begin + i, lo, f_hi) - 1
                    if p > last and needle in self.read(p).lower():
                        last = p
                        yield p
                        i = chunk.find(needle, offset[p + 1] - begin) if p + 1 < f_hi else -1
                    else:
                        i = chunk.find(needle, i + 1)
                begin += max(len(chunk) - len(needle) + 1, 1)
            lo = f_hi

    def _prev_start(self, filters: dict[str, str], start: int, size: int) -> int | None:
        """First position of the page before ``start`` (the ``size`` matches just below it)."""
        first = None
        for k, p in enumerate(self._matches(filters, 0, min(start, self.n), True)):
            first = p
            if k + 1 == size:
                break
        return first

    def count(self, filters: dict[str, str]) -> int:
        """Matches among the records indexed so far."""
        if not filters:
            return self.n
        if len(filters) == 1:
            (field, value), = filters.items()
            code = self._code_of[field].get(value)
            return 0 if code is None else self.value_counts[field][code]
        return sum(1 for _ in self._matches(filters, 0, self.n, False))

    def _check(self, filters: dict[str, str]) -> None:
        unknown = [f for f in filters if f not in self.fields]
        if unknown:
            raise KeyError(f"{self.kind} cannot be filtered by {', '.join(unknown)}; use {', '.join(self.fields) or 'nothing'}")


class RunIndex:
    """The indexes of one run directory, made on first use per kind."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._kinds: dict[str, KindIndex] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> KindIndex:
        with self._lock:
            index = self._kinds.get(kind)
            if index is not None and index.stale:
                index.close()
                index = None
            if index is None:
                index = self._kinds[kind] = KindIndex(self.run_dir, kind)
                index.start()
            else:
                index.refresh()
            return index

    def started(self) -> dict[str, KindIndex]:
        with self._lock:
            return dict(self._kinds)

    def close(self) -> None:
        with self._lock:
            for index in self._kinds.values():
                index.close()
