"""Recovery files: rows a driver could not write when it was closed.

A recovery file is a dump (see :mod:`appendmuch.dumpfile`) whose maps may carry one
more key, ``replaces``: the seq of the stored row that the row overwrites (replace
semantics).  :func:`replay` writes such a file into a driver; the command line offers
it as ``appendmuch replay FILE DB``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgpack

from .dumpfile import Row, check_row, row_map, unpack_maps
from .errors import DumpFormatError

if TYPE_CHECKING:
    from .drivers.base import DBDriver

__all__ = [
    "list_recovery_files",
    "read_recovery_file",
    "recovery_file_name",
    "replay",
    "write_recovery_file",
]

#: (row, seq of the row it overwrites or None)
Entry = tuple[Row, int | None]


def recovery_file_name(directory: str, table: str) -> str:
    """A new, unused file name for a recovery file of ``table`` in ``directory``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = os.path.join(directory, f"{table}.recovery-{stamp}-{os.getpid()}")
    path, n = f"{base}.msgpack", 1
    while os.path.exists(path):
        path, n = f"{base}-{n}.msgpack", n + 1
    return path


def list_recovery_files(directory: str, table: str) -> list[str]:
    """Recovery files of ``table`` in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    prefix = f"{table}.recovery-"
    return sorted(
        os.path.join(directory, name)
        for name in names
        if name.startswith(prefix) and name.endswith(".msgpack")
    )


def write_recovery_file(
    path: str, inserts: Iterable[Row], updates: Iterable[tuple[int, Row]]
) -> int:
    """Write rows (and overwrites) to ``path`` and fsync it; return how many."""
    packer = msgpack.Packer(use_bin_type=True)
    count = 0
    partial = f"{path}.partial"
    with open(partial, "wb") as fh:
        for row in inserts:
            fh.write(packer.pack(row_map(row)))
            count += 1
        for old_seq, row in updates:
            fh.write(packer.pack({**row_map(row), "replaces": old_seq}))
            count += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    return count


def read_recovery_file(path: str | os.PathLike[str]) -> list[Entry]:
    """The entries of a recovery file, validated like a dump."""
    entries: list[Entry] = []
    seen: set[int] = set()
    try:
        with open(path, "rb") as fh:
            for obj in unpack_maps(fh):
                replaces = obj.pop("replaces", None) if isinstance(obj, dict) else None
                if replaces is not None and (type(replaces) is not int or replaces < 1):
                    raise DumpFormatError(
                        f"entry {len(entries)}: 'replaces' must be a positive int"
                    )
                entries.append((check_row(obj, len(entries), seen, None), replaces))
    except DumpFormatError as exc:
        raise DumpFormatError(f"recovery file {os.fspath(path)}: {exc}") from exc
    return entries


def replay(path: str | os.PathLike[str], driver: DBDriver) -> int:
    """Write the entries of a recovery file into ``driver``; return how many.

    All or nothing, in one transaction on SQL drivers.  Rows already stored
    identically are skipped (replaying twice changes nothing); a different row under
    the same seq is a conflict and nothing is written.  Once replayed, the file no
    longer keeps the table from being opened for writing (it may then be deleted).
    """
    entries = read_recovery_file(path)
    driver._replaying = True  # type: ignore[attr-defined]
    try:
        return driver.apply_recovered(entries)
    finally:
        driver._replaying = False  # type: ignore[attr-defined]
