"""Replace a file whole: readers see the old file or the new one, never half of one.

Every file the engine, the trainers and the benchmarks write for others to read (manifests,
summaries, caches, graphs, exports, reports) goes through here: the bytes go to a temporary
file in the same folder (so the rename cannot cross file systems), which then replaces the
target in one ``os.replace``. A failure anywhere removes the temporary file and leaves the
target as it was. The temporary name starts with ``.NAME.`` and ends with ``.tmp``, so a
crash's leftovers are hidden and recognisable (the store sweeps its manifest's).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[IO[bytes]]:
    """A binary file to write that becomes ``path`` when the block ends without an error.

    ``durable``: fsync the file and its folder entry, so the new file also survives power loss
    (a manifest does; a cache or report need not pay for it). Missing folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8); see ``atomic_output``."""
    with atomic_output(path, durable=durable) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def fsync_dir(folder: Path) -> None:
    """Make a created, renamed or removed directory entry durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
