"""A set of record ids that costs about one bit per id for path-numbered ids.

The run store must remember every id it holds (so none is stored twice) and every finished
item (so a resumed run skips it). A Python ``set`` of strings costs ~100 bytes per id: ~19 GB
for a 100M-path run. But nearly every id in a run is numbered by its path: path ``i`` of a
stratum is ``<stratum>-<seed>-<i>`` (it depends only on the seed and i), and the records made
from it add a fixed prefix or suffix (``ep-<path id>``, ``ep-<path id>-pos``,
``<path id>#negative``). So an id splits losslessly into a *shape* (everything but the path
index) and the index, and each shape keeps a bitmap over indices: a handful of shapes per
stratum, each one bit per path. Ids of any other form (and indices written with leading zeros,
which would not round-trip) go to an ordinary set, so every id still works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# "-<seed>-<index>" followed by the end, "-" or "#": the first such pair in an id is its path
# number. The index must be canonical (no leading zero) so that str(int(index)) gives it back.
_PATH_NUMBER = re.compile(r"-[0-9]+-(0|[1-9][0-9]*)(?=$|[-#])")


class IdSet:
    """``add`` / ``in`` / ``len`` / ``clear`` over string ids, compact for path-numbered ids."""

    __slots__ = ("_bitmaps", "_other", "_len")

    def __init__(self, ids: Iterable[str] = ()):
        self._bitmaps: dict[tuple[str, str], bytearray] = {}  # (before index, after index) -> bits by index
        self._other: set[str] = set()
        self._len = 0
        for i in ids:
            self.add(i)

    def add(self, item: str) -> bool:
        """Add ``item``; True if it was not there before."""
        m = _PATH_NUMBER.search(item)
        if m is None:
            if item in self._other:
                return False
            self._other.add(item)
            self._len += 1
            return True
        index = int(m.group(1))
        key = (item[:m.start(1)], item[m.end(1):])
        bits = self._bitmaps.get(key)
        if bits is None:
            bits = self._bitmaps[key] = bytearray()
        byte, mask = index >> 3, 1 << (index & 7)
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits)))  # bytearray over-allocates, so growing one index at a time stays linear
        elif bits[byte] & mask:
            return False
        bits[byte] |= mask
        self._len += 1
        return True

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        m = _PATH_NUMBER.search(item)
        if m is None:
            return item in self._other
        bits = self._bitmaps.get((item[:m.start(1)], item[m.end(1):]))
        if bits is None:
            return False
        index = int(m.group(1))
        byte = index >> 3
        return byte < len(bits) and bool(bits[byte] & (1 << (index & 7)))

    def clear(self) -> None:
        self._bitmaps.clear()
        self._other.clear()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def nbytes(self) -> int:
        """Bytes held by the bitmaps (the fallback set's strings are not counted)."""
        return sum(len(b) for b in self._bitmaps.values())

    def __repr__(self) -> str:
        return f"IdSet({self._len} ids: {len(self._bitmaps)} bitmaps, {len(self._other)} others)"
