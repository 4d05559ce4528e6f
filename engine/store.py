"""The run store: one run directory of shard folders (one per record kind) plus a manifest.

Guarantees, and how they are kept:

* Every id is stored at most once per kind. Opening a run streams every folder once,
  truncating torn tails and collecting the ids (an ``IdSet`` per kind: one bit per id for
  path-numbered ids, so resuming a 100M-path run stays well under 1 GB); ``put`` refuses an
  id already in its set, in this run or an earlier one.
* A finished item stays finished and never loses its records. ``commit`` appends the item's
  records and then its ``WorkDone`` marker, and every write-out hands the record folders to
  the OS before the marker folders (``dead_letters``, ``done``). A marker on disk therefore
  implies its records are on disk, whether the process is killed (-9) or the disk fails; an
  item whose marker did not make it is simply run again, and its records that did make it
  are skipped as duplicates.
* Throughput: records are buffered and handed to the OS when ``buffer_bytes`` pile up and
  every ``flush_interval`` seconds (checked on each put and commit), never fsynced per record.
  ``durability`` picks when to fsync: ``"interval"`` (every ``flush_interval``, the default),
  ``"commit"`` (write out and fsync every commit: slow, for tiny runs) or ``"close"``
  (only on ``flush``/``close``: survives kill -9 but not power loss).
* A failed disk write raises ``StoreWriteError`` naming the run directory; what was written
  before stays readable, the partial frame is truncated (now, or on the next open), and the
  store refuses further writes so nothing inconsistent follows.
* Markers agree with the data. A marker whose records are gone (a shard truncated or damaged
  after the fact) does not count: opening the run reports those items (a logged warning and
  ``incomplete_items``) and they run again; their surviving records are skipped as duplicates.
  When the rerun's records differ from what the old marker lists, a new marker is written and
  the last marker of an id is the one that counts.
* Dead letters can be requeued on purpose (``requeue_dead_letters``, `magnet requeue`): the
  chosen letters move to ``dead_letters_requeued/`` (kept with the time of the requeue) and
  their items are pending again. The dead-letter folder is replaced whole, crash-safely
  (``shards.rewrite_folder``; an interrupted swap is completed on the next open).
* One writer per run directory, enforced with an advisory lock that dies with the process.

The store is used from one thread (the scheduler's event loop).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson

from engine.atomic import write_atomic
from engine.errors import UserInputError
from engine.id_index import IdSet
from engine.records import RECORD_KINDS, DeadLetter, Record, WorkDone
from engine.shards import (
    Corruption,
    OnCorrupt,
    ShardWriteError,
    ShardWriter,
    finish_rewrite,
    is_disk_full,
    iter_frames,
    read_frame_at,
    rewrite_folder,
    shard_files,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REQUEUED = "dead_letters_requeued"  # history of requeued dead letters (not a record kind: readers skip it)
LOCK = ".lock"
MANIFEST_VERSION = 1
# Folders holding "this item is finished" markers: written out after every record folder.
MARKER_KINDS = ("dead_letters", "done")
WRITE_ORDER = tuple(k for k in RECORD_KINDS if k not in MARKER_KINDS) + MARKER_KINDS
SECRET_PARTS = ("key", "token", "secret", "password")
Durability = Literal["interval", "commit", "close"]
_DIGITS = re.compile(r"([0-9]+)")


class StoreWriteError(UserInputError):
    """The disk refused a write. A UserInputError so the CLI prints it as one line and exits 2:
    the fix (free space, fix the disk, rerun to resume) is the user's to make."""


class _Id(msgspec.Struct):
    id: str


class _DeadLetterIds(msgspec.Struct):
    id: str
    item_id: str


class _DoneOutputs(msgspec.Struct):
    id: str
    outputs: list[str] = []


class RequeuedLetter(msgspec.Struct, kw_only=True):
    """A dead letter taken back by a requeue, kept so its error is not forgotten."""

    requeued_at: str
    dead_letter: DeadLetter


def redact(config: Any) -> Any:
    """A copy of ``config`` without any key whose name contains key/token/secret/password."""
    if isinstance(config, dict):
        return {k: redact(v) for k, v in config.items() if not any(p in str(k).lower() for p in SECRET_PARTS)}
    if isinstance(config, (list, tuple)):
        return [redact(v) for v in config]
    return config


def config_fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of a config (secrets removed first, so rotating a key keeps the run)."""
    canonical = orjson.dumps(redact(config), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:16]


@cache
def code_version() -> dict[str, str | None]:
    """Package version and, when the code sits in a git checkout, its commit."""
    root = Path(__file__).resolve().parents[1]
    try:
        from importlib.metadata import version

        pkg_version: str | None = version("magnet-engine")
    except Exception:  # not installed: read the checkout's pyproject
        pkg_version = None
        try:
            import tomllib

            pkg_version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            pass
    commit = None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "magnet-engine", "version": pkg_version, "git_commit": commit}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as err:
        raise UserInputError(f"{path} is not valid JSON ({err}); restore it or rerun with a new --out") from None
    except OSError as err:
        raise UserInputError(f"cannot read {path} ({err.strerror or err}); check its permissions") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path} holds a JSON {type(data).__name__}, not a magnet manifest (a JSON object); "
                             "restore it, or start the run over with `magnet generate ... --force`")
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so readers see the old or the new file, never half."""
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str), durable=True)


def _warn(corruption: Corruption) -> None:
    log.warning("%s", corruption.describe())


def _check_kind(kind: str) -> type[Record]:
    try:
        return RECORD_KINDS[kind]
    except KeyError:
        raise UserInputError(f"unknown record kind {kind!r}; choose one of: {', '.join(RECORD_KINDS)}") from None


def read_records(run_dir: str | os.PathLike, kind: str, *, on_corrupt: OnCorrupt | None = None) -> Iterator[Record]:
    """Stream the records of one kind in write order. Damaged spans are skipped and passed to
    ``on_corrupt`` (default: a logged warning); a frame that does not decode as the kind's type
    is reported the same way."""
    typ = _check_kind(kind)
    report = on_corrupt or _warn
    decoder = msgspec.msgpack.Decoder(typ)
    for path in shard_files(Path(run_dir) / kind):
        for offset, payload in iter_frames(path, report):
            try:
                yield decoder.decode(payload)
            except msgspec.DecodeError as err:
                report(Corruption(path=str(path), offset=offset, length=len(payload), reason=f"not a {typ.__name__}: {err}"))


def id_order(record_id: str) -> tuple[tuple[int, str], ...]:
    """Sort key of ids: digit runs compare as numbers, so ``single-0-2`` comes before ``single-0-10``."""
    return tuple((int(part), "") if part.isascii() and part.isdigit() else (-1, part) for part in _DIGITS.split(record_id) if part)


def read_records_by_id(run_dir: str | os.PathLike, kind: str, *, on_corrupt: OnCorrupt | None = None) -> Iterator[Record]:
    """Like ``read_records`` but in id order (``id_order``), so two runs that stored the same
    records yield them in the same order whichever order their items finished in. Memory: one
    (id, file, offset) entry per record; the records themselves are read one at a time."""
    typ = _check_kind(kind)
    report = on_corrupt or _warn
    decode_id = msgspec.msgpack.Decoder(_Id).decode
    files = shard_files(Path(run_dir) / kind)
    index: list[tuple[tuple[tuple[int, str], ...], str, int, int]] = []
    for n, path in enumerate(files):
        for offset, payload in iter_frames(path, report):
            try:
                rid = decode_id(payload).id
                index.append((id_order(rid), rid, n, offset))  # the id itself breaks ties ("a01" vs "a1")
            except msgspec.DecodeError as err:
                report(Corruption(path=str(path), offset=offset, length=len(payload), reason=f"not a {typ.__name__}: {err}"))
    index.sort()
    decoder = msgspec.msgpack.Decoder(typ)
    fds: dict[int, int] = {}
    try:
        for _, _, n, offset in index:
            if n not in fds:
                fds[n] = os.open(files[n], os.O_RDONLY)
            yield decoder.decode(read_frame_at(fds[n], files[n], offset))
    finally:
        for fd in fds.values():
            os.close(fd)


class RunStore:
    """Append-only, resumable store of one run. Create with ``RunStore.open``."""

    def __init__(self, run_dir: Path, fingerprint: str, config: dict | None, shard_bytes: int, *,
                 durability: Durability, buffer_bytes: int, flush_interval: float):
        self.run_dir = run_dir
        self.fingerprint = fingerprint
        self.config = redact(config or {})
        self.shard_bytes = shard_bytes
        self.durability = durability
        self.buffer_bytes = buffer_bytes
        self.flush_interval = flush_interval
        self.corruptions: list[Corruption] = []  # damage found while opening (torn tails included)
        self._ids: dict[str, IdSet] = {k: IdSet() for k in RECORD_KINDS}
        self._dead_items = IdSet()
        # Finished items whose marker lists records the shards no longer hold -> those ids.
        self._incomplete: dict[str, list[str]] = {}
        self.incomplete_at_open = 0
        self._writers: dict[str, ShardWriter] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._created = _now()
        self._last_flush = time.monotonic()
        self._pending = 0  # bytes put since the last write-out
        self._lock_fd = -1
        self._failed: StoreWriteError | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike,
        *,
        config_fingerprint: str,
        config: dict | None = None,
        shard_bytes: int = 64 << 20,
        durability: Durability = "interval",
        buffer_bytes: int = 1 << 20,
        flush_interval: float = 1.0,
        force: bool = False,
    ) -> RunStore:
        """Create a run, or resume one made with the same config fingerprint.

        ``force`` discards an existing run's shards and manifest (only those files) first.
        """
        if durability not in ("interval", "commit", "close"):
            raise ValueError(f"durability={durability!r}; use 'interval', 'commit' or 'close'")
        run_dir = Path(run_dir)
        store = cls(run_dir, config_fingerprint, config, shard_bytes, durability=durability,
                    buffer_bytes=buffer_bytes, flush_interval=flush_interval)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserInputError(f"cannot create run directory {run_dir}: {err.strerror}; choose another --out") from None
        try:
            store._lock()
            for kind in RECORD_KINDS:
                finish_rewrite(run_dir / kind)  # a requeue cut short by a crash
            store._check_existing(force)
            store._recover()
            store.write_manifest()
        except BaseException as err:
            store._release()
            if isinstance(err, OSError):
                raise UserInputError(
                    f"cannot open run directory {run_dir} for writing ({err.strerror or err}: {err.filename}); "
                    "check its permissions and free space, or choose another --out"
                ) from None
            raise
        return store

    # -- public API -------------------------------------------------------------------------

    def put(self, kind: str, record: Record) -> bool:
        """Buffer one record; False (and nothing written) if its id is already stored."""
        if self._failed is not None or self._closed:
            self._check_writable()
        typ = RECORD_KINDS.get(kind)
        if type(record) is not typ:
            typ = _check_kind(kind)
            raise TypeError(f"kind {kind!r} stores {typ.__name__}, got {type(record).__name__}")
        if not record.id:
            raise ValueError(f"a {typ.__name__} needs a non-empty id to be stored")
        ids = self._ids[kind]
        if record.id in ids:
            return False
        payload = self._encoder.encode(record)
        self._writers[kind].append(payload)
        self._pending += len(payload)
        ids.add(record.id)
        if kind == "dead_letters":
            self._dead_items.add(record.item_id)
        self.maybe_flush()
        return True

    def commit(self, item_id: str, records: Iterable[tuple[str, Record]]) -> None:
        """Store a finished item's records (skipping ids already stored), then its done marker."""
        outputs = []
        for kind, record in records:
            self.put(kind, record)
            outputs.append(record.id)
        stale = self._incomplete.pop(item_id, None)
        if stale is None:
            self.put("done", WorkDone(id=item_id, outputs=outputs))
        elif not self._all_stored(stale):
            # The rerun made other records than the old marker lists: a new marker, which wins on open.
            self._put_marker_again(WorkDone(id=item_id, outputs=outputs))
        if self.durability == "commit":
            self.flush()

    def dead_letter(self, dl: DeadLetter) -> None:
        """Store a dead letter; its item counts as finished from now on."""
        self.put("dead_letters", dl)
        if self.durability == "commit":
            self.flush()

    def requeue_dead_letters(self, select: Callable[[DeadLetter], bool], *, dry_run: bool = False) -> list[DeadLetter]:
        """Make the items of the selected dead letters pending again; return those letters.

        Only letters of unfinished items can be chosen (not, say, the negative-step letter of a
        path that stored its positive). Order of writes, for crash safety: the letters are
        appended to ``dead_letters_requeued/`` (skipping copies already there from an earlier,
        interrupted requeue), then the dead-letter folder is replaced by one without them.
        """
        self.flush()
        listed = IdSet(o for m in read_records(self.run_dir, "done") for o in m.outputs)
        encode = self._encoder.encode
        kept: list[bytes] = []
        chosen: list[DeadLetter] = []
        for dl in read_records(self.run_dir, "dead_letters"):
            if dl.id not in listed and not self._finished_by_marker(dl.item_id) and select(dl):
                chosen.append(dl)
            else:
                kept.append(encode(dl))
        if dry_run or not chosen:
            return chosen
        try:
            self._move_to_history(chosen, kept)
        except OSError as err:
            raise self._fail(err, self.run_dir / REQUEUED) from err
        return chosen

    def _move_to_history(self, chosen: list[DeadLetter], kept: list[bytes]) -> None:
        encode = self._encoder.encode
        history: set[bytes] = set()
        decode_old = msgspec.msgpack.Decoder(RequeuedLetter).decode
        log_writer = ShardWriter.open(self.run_dir / REQUEUED, shard_bytes=self.shard_bytes,
                                      on_payload=lambda b: history.add(encode(decode_old(b).dead_letter)),
                                      on_corrupt=self._note_corruption)
        try:
            at = _now()
            for dl in chosen:
                if encode(dl) not in history:
                    log_writer.append(encode(RequeuedLetter(requeued_at=at, dead_letter=dl)))
            log_writer.flush(fsync=True)
        finally:
            log_writer.close(flush=False)
        folder = self.run_dir / "dead_letters"
        self._writers["dead_letters"].close(flush=False)  # flushed above; reopened on the new files
        rewrite_folder(folder, kept, shard_bytes=self.shard_bytes)
        ids, items = self._ids["dead_letters"], self._dead_items
        ids.clear()
        items.clear()
        decoder = msgspec.msgpack.Decoder(_DeadLetterIds)

        def load(payload: bytes) -> None:
            rec = decoder.decode(payload)
            ids.add(rec.id)
            items.add(rec.item_id)

        self._writers["dead_letters"] = ShardWriter.open(folder, shard_bytes=self.shard_bytes, on_payload=load,
                                                         on_corrupt=self._note_corruption)

    def _finished_by_marker(self, item_id: str) -> bool:
        return item_id in self._ids["done"] and item_id not in self._incomplete

    def is_finished(self, item_id: str) -> bool:
        return self._finished_by_marker(item_id) or item_id in self._dead_items

    @property
    def incomplete_items(self) -> list[str]:
        """Items marked finished whose records are missing from the shards (they run again)."""
        return sorted(i for i in self._incomplete if i not in self._dead_items)

    def has(self, kind: str, record_id: str) -> bool:
        _check_kind(kind)
        return record_id in self._ids[kind]

    def counts(self) -> dict[str, int]:
        """Records stored per kind; ``done`` counts only items whose records are all there."""
        counts = {kind: len(ids) for kind, ids in self._ids.items()}
        counts["done"] -= len(self._incomplete)
        return counts

    def sizes(self) -> dict[str, int]:
        """Bytes on disk per kind (written-out data only)."""
        return {kind: sum(p.stat().st_size for p in shard_files(self.run_dir / kind)) for kind in RECORD_KINDS}

    def flush(self) -> None:
        """Write out every buffered record and fsync: everything put so far is durable."""
        self._write_out(fsync=True)

    def maybe_flush(self) -> None:
        """Write out if the buffer is full or ``flush_interval`` has passed. ``put`` calls it;
        call it from a timer too when puts can be minutes apart (slow teachers)."""
        # A full buffer only goes to the OS (enough to survive kill -9); fsync, the expensive
        # part, happens at most once per flush_interval.
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self._write_out(fsync=self.durability != "close")
        elif self._pending >= self.buffer_bytes:
            self._write_out(fsync=False, timed=False)

    def write_manifest(self, extra: dict | None = None) -> None:
        """Write out buffered records, then replace the manifest (counts then match the shards);
        ``extra`` (secrets removed) is merged into its ``extra`` section."""
        self._write_out(fsync=self.durability != "close")
        manifest = read_manifest(self.run_dir) or {}
        data = {
            "manifest_version": MANIFEST_VERSION,
            "config_fingerprint": self.fingerprint,
            "config": self.config or manifest.get("config", {}),  # opened without a config (requeue): keep it
            "counts": self.counts(),
            "bytes": self.sizes(),
            "shards": {kind: len(shard_files(self.run_dir / kind)) for kind in RECORD_KINDS},
            "code_version": code_version(),
            "created": manifest.get("created", self._created),
            "updated": _now(),
            "last_open": {
                "corrupted_frames": sum(not c.torn_tail for c in self.corruptions),
                "torn_tails_truncated": sum(c.torn_tail for c in self.corruptions),
                "finished_items_missing_records": self.incomplete_at_open,
            },
            "extra": redact({**manifest.get("extra", {}), **(extra or {})}),
        }
        try:
            write_json_atomic(self.run_dir / MANIFEST, data)
        except OSError as err:
            raise self._fail(err, self.run_dir / MANIFEST) from err

    def close(self) -> None:
        """Flush, write the manifest and release the run directory (idempotent)."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.flush()
                self.write_manifest()
        finally:
            self._closed = True
            for writer in self._writers.values():
                writer.close(flush=False)  # flushed above, in order; after a failure nothing more may land
            self._release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _lock(self) -> None:
        self._lock_fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise UserInputError(
                f"run directory {self.run_dir} is in use by another magnet process; wait for it to finish or choose another --out"
            ) from None

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def _check_existing(self, force: bool) -> None:
        for stale in self.run_dir.glob(f".{MANIFEST}.*.tmp"):  # left by a crash mid-write
            stale.unlink()
        has_shards = any(shard_files(self.run_dir / kind) for kind in RECORD_KINDS)
        # --force discards the manifest unread: a damaged one must not block starting over.
        if force and ((self.run_dir / MANIFEST).exists() or has_shards):
            for kind in RECORD_KINDS:
                for path in shard_files(self.run_dir / kind):
                    path.unlink()
            (self.run_dir / MANIFEST).unlink(missing_ok=True)
            return
        manifest = read_manifest(self.run_dir)
        if manifest is None:
            ours = {LOCK, *RECORD_KINDS}
            others = sorted(p.name for p in self.run_dir.iterdir() if p.name not in ours)
            if others or has_shards:
                raise UserInputError(
                    f"{self.run_dir} is not empty and has no {MANIFEST} (found {', '.join(others[:3]) or 'shards'}); "
                    "choose a new --out, or --force to start over there"
                )
            return
        old = manifest.get("config_fingerprint")
        if old != self.fingerprint:
            raise UserInputError(
                f"{self.run_dir} was made with config fingerprint {old}, this config has {self.fingerprint}; "
                "use a new --out, or --force to discard that run"
            )
        self._created = manifest.get("created", self._created)

    def _recover(self) -> None:
        for kind in RECORD_KINDS:
            ids = self._ids[kind]
            if kind == "done":  # last in RECORD_KINDS: every data id is known by now
                decoder = msgspec.msgpack.Decoder(_DoneOutputs)

                def load(payload: bytes, ids=ids, decoder=decoder) -> None:
                    rec = decoder.decode(payload)
                    ids.add(rec.id)
                    if self._all_stored(rec.outputs):  # a later marker of the same id replaces an earlier one
                        self._incomplete.pop(rec.id, None)
                    else:
                        self._incomplete[rec.id] = rec.outputs
            elif kind == "dead_letters":
                decoder = msgspec.msgpack.Decoder(_DeadLetterIds)

                def load(payload: bytes, ids=ids, decoder=decoder) -> None:
                    rec = decoder.decode(payload)
                    ids.add(rec.id)
                    self._dead_items.add(rec.item_id)
            else:
                decode = msgspec.msgpack.Decoder(_Id).decode

                def load(payload: bytes, ids=ids, decode=decode) -> None:
                    ids.add(decode(payload).id)

            try:
                self._writers[kind] = ShardWriter.open(
                    self.run_dir / kind, shard_bytes=self.shard_bytes, on_payload=load, on_corrupt=self._note_corruption
                )
            except msgspec.DecodeError as err:
                raise UserInputError(
                    f"{self.run_dir / kind} holds a frame that is not a {RECORD_KINDS[kind].__name__} ({err}); "
                    "it was written by another tool or version: move it away or choose a new --out"
                ) from None
        self._report_incomplete()

    def _all_stored(self, record_ids: Iterable[str]) -> bool:
        data = [self._ids[k] for k in RECORD_KINDS if k != "done"]
        return all(any(rid in ids for ids in data) for rid in record_ids)

    def _report_incomplete(self) -> None:
        lost = self.incomplete_items
        self.incomplete_at_open = len(lost)
        if not lost:
            return
        damage = self.corruptions
        why = ""
        if damage:
            why = f"; damage found: {damage[0].describe()}" + (f" and {len(damage) - 1} more" if len(damage) > 1 else "")
        log.warning("%s: %d finished work items have records missing from the shards (e.g. %s)%s; "
                    "they are pending again and will be regenerated", self.run_dir, len(lost), ", ".join(lost[:3]), why)

    def _put_marker_again(self, marker: WorkDone) -> None:
        """Append a marker for an id that already has one (``put`` refuses repeated ids)."""
        self._check_writable()
        payload = self._encoder.encode(marker)
        self._writers["done"].append(payload)
        self._pending += len(payload)
        self.maybe_flush()

    def _note_corruption(self, c: Corruption) -> None:
        self.corruptions.append(c)
        if c.torn_tail:
            log.info("truncating %s", c.describe())
        else:
            log.warning("%s; the records after it are kept", c.describe())

    def _write_out(self, *, fsync: bool, timed: bool = True) -> None:
        self._check_writable()
        path = None
        try:
            # With fsync, records are durable before any marker is even handed to the OS, so
            # a power loss cannot keep a marker whose records it dropped.
            for kind in WRITE_ORDER:
                writer = self._writers[kind]
                path = writer.current_path
                if fsync and kind == MARKER_KINDS[0]:
                    for data_kind in WRITE_ORDER[: WRITE_ORDER.index(kind)]:
                        self._writers[data_kind].sync()
                writer.write_out()
            if fsync:
                for kind in MARKER_KINDS:
                    path = self._writers[kind].current_path
                    self._writers[kind].sync()
        except ShardWriteError as err:
            raise self._fail(err, err.path) from err
        except OSError as err:
            raise self._fail(err, path or self.run_dir) from err
        if timed:
            self._last_flush = time.monotonic()
        self._pending = 0

    def _fail(self, err: OSError, path: Path) -> StoreWriteError:
        if is_disk_full(err):
            hint = "free some disk space"
        elif err.errno == errno.EFBIG:
            hint = "raise the file size limit (ulimit -f)"
        else:
            hint = "check the disk"
        self._failed = StoreWriteError(
            f"cannot write to run directory {self.run_dir} ({path.name}: {err.strerror or err}); "
            f"records stored before this point are safe: {hint}, then rerun the same command to resume"
        )
        return self._failed

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise RuntimeError(f"the run store for {self.run_dir} is closed")
