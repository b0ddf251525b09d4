"""The driver interface every backend implements, and what all of them share."""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..dumpfile import MAX_DUMP_VALUE_BYTES, Row, check_tree, pack_rows, read_dump

if TYPE_CHECKING:
    from ..codec import Codec
    from ..recovery import Entry
    from .sharing import Engine

__all__ = ["DBDriver", "Row", "close_unattended"]

_log = logging.getLogger("appendmuch")


def close_unattended(close: Callable[[], None], name: str) -> None:
    """Run ``close`` (of a driver nobody closed: at exit, or when it is collected).

    Nobody can catch an exception there, so a failure is said in one warning line
    (``logging``, logger ``appendmuch``): queued rows that could not be written went
    to a recovery file, and the error names it and the command that replays it."""
    try:
        close()
    except Exception as exc:
        _log.warning("appendmuch: closing %s at exit: %s", name, exc)


class DBDriver(ABC):
    """Where a Store's log is kept.  One driver serves one Store in one thread.

    A driver stores rows ``(seq, namespace, field, value, created_at, context)``; it
    owns the sequence counter, which only ever moves forward (also across
    :meth:`reset`) and resumes after the largest stored seq when a log is opened.

    Subclasses implement the abstract methods; :meth:`dump` and :meth:`restore` are
    built on them.
    """

    #: refuses every write (set by drivers opened with ``read_only=True``)
    read_only: bool = False
    #: shared mode (several processes write one table): the lease and the follower
    sharing: Engine | None = None
    #: the largest encoded value (bytes) this backend stores; a Store refuses a bigger
    #: one at assignment, and ``restore`` refuses a dump row holding one.  Drivers set
    #: their backend's limit; an instance may lower it.
    max_value_bytes: int = MAX_DUMP_VALUE_BYTES
    #: package-internal: set by :func:`appendmuch.recovery.replay` (and the inspection
    #: commands' ``replay``) while it opens the driver to replay, so that waiting
    #: recovery files do not stop the open
    replaying: bool = False
    #: closed for good by its Store (see :meth:`retire`)
    retired: bool = False

    def __init__(self) -> None:
        #: the largest seq allocated or stored so far (0 for an empty new log); a plain
        #: attribute, because the Store's write path reads and bumps it inline
        self.last_seq = 0
        self._now: float | None = None

    # ------------------------------------------------------------------ sequence

    def next_seq(self) -> int:
        """Allocate the next sequence number.  O(1)."""
        self.last_seq += 1
        return self.last_seq

    def saw_seq(self, seq: int) -> None:
        """Package-internal: a row with ``seq`` is stored (seqs go on after it)."""
        self.last_seq = max(self.last_seq, seq)

    @property
    def now(self) -> float | None:
        """``created_at`` of the last row written through this driver, or None."""
        return self._now

    # ------------------------------------------------------------------ interface

    @abstractmethod
    def ensure(self) -> None:
        """Check the connection and the table; create the table when it is absent.

        Raises :class:`~appendmuch.errors.SchemaError` (a RuntimeError) when an
        existing table has another layout; the table is left untouched.
        """

    @abstractmethod
    def load_rows(self) -> Iterator[Row]:
        """Every stored row in seq order (pending rows are written first).

        The caller reports the largest seq it saw with :meth:`saw_seq`.
        """

    @abstractmethod
    def append(self, row: Row) -> bool:
        """Queue a new row; return True when the batch is due to be written (flush)."""

    @abstractmethod
    def replace(self, old_seq: int | None, row: Row) -> bool:
        """Overwrite the row with ``old_seq`` by ``row`` (insert when None); like append."""

    def has_row(self, seq: int) -> bool:
        """Whether the row with ``seq`` was handed to :meth:`append` or :meth:`replace`
        (queued or stored): the Store asks after a write was cut short between the
        two (Ctrl-C).  The default says yes, right for a driver whose ``append`` is
        one step; drivers that can tell override it."""
        return True

    @abstractmethod
    def flush(self) -> None:
        """Write every queued row.  On failure the rows stay queued and it raises."""

    def submit(self) -> None:
        """A full batch is waiting (``append`` returned True): hand it to the database.

        The default writes it at once, like :meth:`flush`; a driver may return before
        the database has committed it (a later ``flush`` waits for it).
        """
        self.flush()

    @abstractmethod
    def close(self) -> None:
        """Flush and release connections."""

    def retire(self) -> None:
        """Close for good: what ``Store.close()`` calls.

        Unlike :meth:`close` (after which a driver used again reconnects), a retired
        driver never opens for writing again: SQL drivers reopen read-only for later
        reads, take no writer lock, and refuse writes with
        :class:`~appendmuch.errors.ClosedError`.
        """
        self.close()

    def identity(self) -> dict[str, Any]:
        """Which database this driver writes to, as recovery files record it."""
        ident = self.__dict__.get("_identity_id")
        if ident is None:
            ident = self.__dict__["_identity_id"] = uuid.uuid4().hex
        return {"backend": type(self).__name__.lower(), "id": ident}

    @abstractmethod
    def size(self) -> int | None:
        """Bytes used by the stored log, or None where that has no meaning (Memory)."""

    @abstractmethod
    def reset(self) -> None:
        """Drop and recreate the table, empty.  The sequence counter is kept."""

    @abstractmethod
    def _insert_restored(self, rows: Iterable[Row]) -> None:
        """Insert validated dump rows atomically: all of them or none (then raise)."""

    @abstractmethod
    def _iter_rows(self) -> Iterator[Row]:
        """Every stored row in seq order, for :meth:`dump`."""

    def stored_names(self) -> Iterable[tuple[str, str]]:
        """Package-internal (export): every (namespace, field) stored.  The default
        scans all rows."""
        return {(row[1], row[2]) for row in self._iter_rows()}

    # ------------------------------------------------------------------ dump/restore

    def dump(self) -> Iterator[bytes]:
        """The whole log as msgpack maps, one ``bytes`` chunk per row, in seq order.

        Each map is ``{seq, namespace, field, value, created_at, context}``; the chunks
        concatenated form a stream that :meth:`restore` of any driver accepts.

        >>> from appendmuch import Memory, Store
        >>> store = Store(Memory())
        >>> store.storage("a").x = 1
        >>> chunks = list(store.driver.dump())
        >>> len(chunks)
        1
        """
        self.ensure()
        self.flush()
        return pack_rows(self._iter_rows())

    def restore(self, stream: Any, *, codec: Codec | None = None) -> int:
        """Append the rows of a dump, keeping their seqs; return how many.

        ``stream`` is a binary file object, ``bytes``, or an iterable of ``bytes``
        chunks.  All or nothing: a malformed dump, a seq that already exists, or (when
        ``codec`` is given) a value that does not decode raises
        :class:`~appendmuch.errors.DumpFormatError` and restores no row.  A Store
        already open on this driver sees the rows after ``store.load()``.
        """
        self.ensure()
        self.flush()
        rows = read_dump(stream, codec=codec, max_value_bytes=self.max_value_bytes)
        check_tree(rows, self.stored_names())
        self._insert_restored(rows)
        if rows:
            self.saw_seq(max(row[0] for row in rows))
        return len(rows)

    @abstractmethod
    def apply_recovered(self, entries: list[Entry]) -> int:
        """Write the entries of a recovery file (see :func:`appendmuch.recovery.replay`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
