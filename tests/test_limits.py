"""Value sizes: each backend refuses at assignment what it could not store, and every
dump this package writes can be restored.

The real limits are large (a billion bytes on SQLite), so the behaviour tests lower a
driver's documented ``max_value_bytes`` attribute and write values just over it.  One
test dumps and restores a real 120 MB value, past msgpack's default 100 MiB limit.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from typing import Any

import msgpack
import pytest

from appendmuch import Memory, PostgreSQL, Sqlite3, Store
from appendmuch.dumpfile import MAX_DUMP_VALUE_BYTES
from appendmuch.errors import DumpFormatError, SeqOverflowError, ValueTooLargeError
from backends import Backend, MemoryBackend, PostgresBackend, SqliteBackend, is_shared
from snapshots import state, unchanged

LIMIT = 64


def limited(backend: Backend, **kwargs: Any) -> tuple[Store, list[Any]]:
    """A Store on ``backend`` whose driver takes values of at most LIMIT bytes, and the
    list its on_change callback records into."""
    calls: list[Any] = []
    store = backend.store(on_change=lambda *args: calls.append(args), **kwargs)
    store.driver.max_value_bytes = LIMIT
    return store, calls


def test_documented_limits() -> None:
    """The per-backend limits docs/backends.md gives."""
    assert Sqlite3.max_value_bytes == 1_000_000_000 - 2**20
    assert PostgreSQL.max_value_bytes == 2**30 - 2**20
    assert Memory.max_value_bytes == MAX_DUMP_VALUE_BYTES == 2**32 - 2**20


@pytest.mark.parametrize(
    ("at_limit", "over_limit"),
    [
        ("a" * 61, "a" * 62),  # str: type byte + quotes + characters
        (b"\x00" * 45, b"\x00" * 48),  # bytes: type byte + quoted base64
        ([1] * 31, [1] * 32),  # a mutable list: "[1,1,...]"
    ],
    ids=["str", "bytes", "list"],
)
def test_value_over_the_limit_is_refused_and_changes_nothing(
    backend: Backend, at_limit: Any, over_limit: Any
) -> None:
    """A value of (about) max_value_bytes is stored; a few bytes more raises
    ValueTooLargeError naming the field, the size and the limit, and changes nothing:
    no entry, no seq, no callback, the old value still readable."""
    store, calls = limited(backend)
    s = store.storage("game", "p1")
    assert LIMIT - 3 <= len(store.codec.encode(at_limit)) <= LIMIT
    size = len(store.codec.encode(over_limit))
    assert size > LIMIT
    s.x = at_limit
    before, ncalls = state(store), len(calls)
    with pytest.raises(ValueTooLargeError, match=rf"'x'.*\b{size} bytes.*\b{LIMIT}\b"):
        s.x = over_limit
    with pytest.raises(ValueError):  # it is a ValueError too
        s.y = over_limit
    assert state(store) == before
    assert len(calls) == ncalls
    with s:
        assert s.x == at_limit
    store = backend.reopen(store)
    with store.storage("game", "p1") as s:
        assert s.x == at_limit
    store.close()


def test_block_exit_over_the_limit_writes_no_field(backend: Backend) -> None:
    """A with block that grew one value past the limit saves none of its changes (all or
    nothing) and says which field is too big."""
    store, calls = limited(backend)
    s = store.storage("game", "p1")
    s.small = [1]
    s.big = [1]
    before, ncalls = state(store), len(calls)
    with pytest.raises(ValueTooLargeError, match=r"'big'"), s:
        s.small.append(2)
        s.big.extend([1] * 40)
    assert state(store) == before
    assert len(calls) == ncalls
    store.close()


def test_nested_exit_over_the_limit_discards_only_the_nested_changes(backend: Backend) -> None:
    """A nested block whose exit cannot save (a value too big) fails like a block that
    raised: its changes are discarded, the enclosing block's kept and saved."""
    store, _ = limited(backend)
    s = store.storage("game", "p1")
    s.items = [1]
    with s:
        s.items.append(2)
        with pytest.raises(ValueTooLargeError), s:
            s.items.extend([1] * 40)
        assert s.items == [1, 2]
    assert [v.data for v in s.__history__()["items"]] == [[1], [1, 2]]
    store.close()


def test_restore_refuses_a_value_the_target_cannot_store(backend: Backend) -> None:
    """A dump row whose value exceeds the target driver's limit is refused naming the
    row, and nothing is restored."""
    source = Store(Memory())
    source.storage("a").x = "ok"
    source.storage("a").y = "b" * 100
    data = b"".join(source.driver.dump())
    store, _ = limited(backend)
    with unchanged(store):
        with pytest.raises(DumpFormatError, match=r"dump row 1\b.*seq 2\b.*'y'.*103 bytes.*\b64\b"):
            store.driver.restore(data)
    store.close()


def test_a_dump_with_a_120_megabyte_value_restores() -> None:
    """Every dump this package writes can be restored: a 120 MB value (past msgpack's
    default 100 MiB limit) survives dump -> restore, as bytes, a file and chunks."""
    big = "x" * 120_000_000
    source = Store(Memory())
    source.storage("big").text = big
    source.storage("big").after = 1
    data = b"".join(source.driver.dump())
    del source
    assert len(data) > 120_000_000
    target = Memory()
    assert target.restore(io.BytesIO(data)) == 2
    store = Store(target)
    assert store.storage("big").text == big
    assert store.storage("big").after == 1
    assert b"".join(target.dump()) == data


def test_restore_reads_no_more_than_a_dump_can_hold() -> None:
    """The reader's limits stay bounded: a stream claiming an array of 2**32 elements is
    refused as malformed, not allocated."""
    hostile = b"\xdd\xff\xff\xff\xff"  # array 32 header: 4,294,967,295 elements
    with pytest.raises(DumpFormatError):
        Memory().restore(hostile + msgpack.packb(1))


def test_the_largest_seq_is_refused_clearly_and_changes_nothing(backend: Backend) -> None:
    """A row another tool put at seq 2**63 - 2: the next write takes the last seq a
    table can hold, and every write after it raises SeqOverflowError naming the seq and
    the table, with nothing changed."""
    last = 2**63 - 1
    backend.store().close()  # (the table)
    insert_row(backend, (last - 1, "t", "x", b"\x001", 1.0, "tool:1"))
    if is_shared(backend):
        # shared mode numbers writes not yet committed from 2**62 on: refused at open
        with pytest.raises(SeqOverflowError, match=str(last - 1)):
            backend.store()
        return
    store = backend.store()
    s = store.storage("t")
    s.x = 2
    assert [v.seq for v in s.__history__()["x"]] == [last - 1, last]
    with unchanged(store):
        for attempt in (lambda: setattr(s, "x", 3), lambda: setattr(s, "y", 3)):
            with pytest.raises(SeqOverflowError, match=str(last)) as raised:
                attempt()
            assert isinstance(raised.value, OverflowError)
            assert repr(store.driver) in str(raised.value)
    store = backend.reopen(store)
    assert [v.data for v in store.storage("t").__history__()["x"]] == [1, 2]
    store.close()


def insert_row(backend: Backend, row: tuple[Any, ...]) -> None:
    """Put a row into the table as another tool would (not through appendmuch)."""
    if isinstance(backend, MemoryBackend):
        backend.driver().append(row)
    elif isinstance(backend, PostgresBackend):
        import psycopg

        with psycopg.connect(backend.conninfo, autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{backend.prefix}_values" (seq, namespace, field, value, '
                "created_at, context) VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
    else:
        assert isinstance(backend, SqliteBackend)
        with contextlib.closing(sqlite3.connect(backend.path)) as conn, conn:
            conn.execute(
                "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, "
                "context) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
