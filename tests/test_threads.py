"""One Store shared by many threads (README "Threads").

Real threads on every backend, with exact results: every field's history in seq order,
counters exact, nothing a thread saw acknowledged missing, and the disk equal to
memory after a reopen.  Threads meet at barriers and events, never at sleeps.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from appendmuch import Storage, Store, iter_fields, retry_on_conflict, within
from appendmuch.errors import ClosedError
from backends import ALL_FACTORIES, Backend
from helpers import datas, settled
from snapshots import cache_snapshot

THREADS = 8
WRITES = 5_000


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every few microseconds instead of every 5 ms, so that races
    show within one run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(index)`` in ``count`` threads at once; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            start.wait()
            target(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def assert_in_seq_order(store: Store) -> list[int]:
    """Every field's history is sorted by seq; return all seqs (committed first:
    shared mode gives a write its final seq when it commits)."""
    settled(store)
    seqs: list[int] = []
    for namespace, field, log in iter_fields(store.cache):
        mine = [value.seq for value in log]
        assert mine == sorted(mine), f"{namespace} {field} out of seq order"
        seqs += mine
    return seqs


def assert_disk_equals_memory(backend: Backend, store: Store) -> Store:
    settled(store)
    memory = cache_snapshot(store)
    store = backend.reopen(store)
    assert cache_snapshot(store) == memory
    return store


def test_concurrent_writes_keep_every_history_in_seq_order(backend: Backend) -> None:
    """8 threads x 5,000 assignments (each to its own field and to one shared field):
    no seq lost or repeated, every history in seq order, each thread's values in the
    order it wrote them, and the disk equal to memory after a reopen."""
    store = backend.store()

    def write(index: int) -> None:
        own = store.storage("own", f"t{index}")
        shared = store.storage("shared")
        for i in range(WRITES):
            own.n = i
            shared.last = index * WRITES + i

    run_threads(THREADS, write)
    seqs = assert_in_seq_order(store)
    assert sorted(seqs) == list(range(1, 2 * THREADS * WRITES + 1))
    for index in range(THREADS):
        assert datas(store.storage("own", f"t{index}"), "n") == list(range(WRITES))
    last = datas(store.storage("shared"), "last")
    assert sorted(last) == list(range(THREADS * WRITES))
    for index in range(THREADS):
        mine = [v for v in last if v // WRITES == index]
        assert mine == sorted(mine)
    store = assert_disk_equals_memory(backend, store)
    assert store.storage("shared").last == last[-1]
    store.close()


def test_with_blocks_in_threads_count_exactly(backend: Backend) -> None:
    """8 threads each run 500 ``with`` blocks on one namespace, incrementing their own
    counter and appending to their own list, and reading another thread's counter:
    every count is exact.  A block whose read was overtaken by another thread's write
    raises ConflictError and is run again (SPEC section 11); the others never fail."""
    rounds = 500
    store = backend.store()
    team = store.storage("team")
    for index in range(THREADS):
        setattr(team, f"c{index}", {"n": 0})
        setattr(team, f"l{index}", [])

    @retry_on_conflict(attempts=10_000)
    def one_round(s: Storage, index: int, i: int) -> None:
        with s:
            getattr(s, f"c{index}")["n"] += 1
            getattr(s, f"l{index}").append(i)
            other = (index + 1) % THREADS
            assert getattr(s, f"c{other}")["n"] >= 0

    def work(index: int) -> None:
        s = store.storage("team")
        for i in range(rounds):
            one_round(s, index, i)

    run_threads(THREADS, work)
    assert_in_seq_order(store)
    with team:
        for index in range(THREADS):
            assert getattr(team, f"c{index}") == {"n": rounds}
            assert getattr(team, f"l{index}") == list(range(rounds))
    for index in range(THREADS):
        assert [d["n"] for d in datas(team, f"c{index}")] == list(range(rounds + 1))
    store = assert_disk_equals_memory(backend, store)
    store.close()


def test_a_threads_block_neither_sees_nor_saves_another_threads_copies(
    backend: Backend,
) -> None:
    """Working copies are per thread: while thread A holds an unsaved change in its
    block, thread B's block reads the stored value and its exit writes nothing; A's
    exit then saves A's change."""
    store = backend.store()
    s = store.storage("game", "p1")
    s.items = [0]
    a_changed, b_done = threading.Event(), threading.Event()
    seen_by_b: list[Any] = []

    def thread_a() -> None:
        with s:
            s.items.append("A")
            a_changed.set()
            assert b_done.wait(60)
            assert datas(s, "items") == [[0]]  # B saved nothing of A's

    def thread_b() -> None:
        assert a_changed.wait(60)
        with s:
            seen_by_b.append(list(s.items))
        b_done.set()

    threads = [threading.Thread(target=f) for f in (thread_a, thread_b)]
    errors: list[BaseException] = []
    for thread in threads:
        thread.run = _reporting(thread.run, errors)  # type: ignore[method-assign]
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert seen_by_b == [[0]]
    assert datas(s, "items") == [[0], [0, "A"]]
    store.close()


def _reporting(run: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    def wrapped() -> None:
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    return wrapped


def test_readers_query_while_writers_write(backend: Backend) -> None:
    """Readers run ``within``, ``within.along``, ``__history__`` and ``__fields__`` while
    writers write rounds: every answer is one the log held at some moment, and no reader
    fails."""
    rounds = 1_000
    writers = 4
    store = backend.store()
    done = threading.Event()
    remaining = [writers]
    count_lock = threading.Lock()

    def writer(index: int) -> None:
        s = store.storage("game", f"p{index}")
        try:
            for r in range(1, rounds + 1):
                s.round = r
                s.score = r * 10
                if r % 4 == 0:
                    setattr(s, f"extra{r}", r)  # new fields while readers list them
        finally:
            with count_lock:
                remaining[0] -= 1
                if not remaining[0]:
                    done.set()

    def reader(index: int) -> None:
        s = store.storage("game", f"p{index % writers}")
        checks = 0
        while not done.is_set() or checks < 100:
            checks += 1
            history = s.__history__()
            for field in history:
                seqs = [v.seq for v in history[field]]
                assert seqs == sorted(seqs)
            rounds_seen = [v.data for v in history.get("round", ())]
            assert rounds_seen == list(range(1, len(rounds_seen) + 1))
            if rounds_seen:
                r = rounds_seen[-1]
                assert within(s, round=r).get("score") in (None, (r - 1) * 10, r * 10)
                assert within.strict(s, round=r).get("score") in (None, r * 10)
            along = [value for value, _ in within.along(s, "round")]
            assert along == list(range(1, len(along) + 1))
            fields = s.__fields__()
            assert all(f in ("round", "score") or f.startswith("extra") for f in fields)
            assert len(set(fields)) == len(fields)

    run_threads(2 * writers, lambda index: writer(index) if index < writers else reader(index))
    assert_in_seq_order(store)
    for index in range(writers):
        s = store.storage("game", f"p{index}")
        assert datas(s, "round") == list(range(1, rounds + 1))
        assert within(s, round=rounds).score == rounds * 10
    store = assert_disk_equals_memory(backend, store)
    store.close()


def test_flush_and_close_while_threads_write(backend: Backend) -> None:
    """Threads write while the main thread flushes and then closes the Store: every
    assignment that returned is on disk after a reopen, and every later one raises
    ClosedError and stores nothing."""
    store = backend.store()
    acknowledged: list[list[int]] = [[] for _ in range(THREADS)]
    progress = threading.Semaphore(0)

    def write(index: int) -> None:
        s = store.storage("w", f"t{index}")
        i = 0
        while True:
            try:
                s.n = i
            except ClosedError:
                return
            acknowledged[index].append(i)
            if i == 200:
                progress.release()
            i += 1

    runner = threading.Thread(target=run_threads, args=(THREADS, write))
    runner.start()
    for _ in range(THREADS):
        progress.acquire()
        store.flush()
    store.close()
    runner.join()
    store = backend.store()
    for index in range(THREADS):
        assert datas(store.storage("w", f"t{index}"), "n") == acknowledged[index]
    assert len(assert_in_seq_order(store)) == sum(map(len, acknowledged))
    store.close()


@pytest.mark.parametrize("name", [name for name in ALL_FACTORIES if name.endswith("-shared")])
def test_entries_applied_from_a_background_thread(name: str, tmp_path: Path) -> None:
    """Rows another writer commits are added by this Store's background thread while
    this thread reads: every read sees a prefix of them, in seq order, and all arrive."""
    backend = ALL_FACTORIES[name](tmp_path)
    store = backend.store()
    other = backend.store()
    remote = store.storage("remote")
    count = 2_000

    def write(_: int) -> None:
        mine = other.storage("remote")
        for i in range(count):
            mine.x = i
            if i % 50 == 0:
                other.flush()
        other.flush()

    writer = threading.Thread(target=run_threads, args=(1, write))
    writer.start()
    reads = 0
    try:
        while writer.is_alive() or not reads:
            reads += 1
            history = remote.__history__().get("x", ())
            assert [v.data for v in history] == list(range(len(history)))
            seqs = [v.seq for v in history]
            assert seqs == sorted(seqs)
            value = remote.get("x")
            assert value is None or 0 <= value < count
            assert remote.__fields__() in ([], ["x"])
    finally:
        writer.join()
    store.sync()
    assert datas(remote, "x") == list(range(count))
    other.close()
    store.close()
    backend.cleanup()


def test_a_read_racing_a_write_never_remembers_the_older_value(backend: Backend) -> None:
    """A read that finds a plain scalar remembers it for later lock-free reads.  If a
    write lands between finding it and remembering it, the older value must not be
    remembered: reads after the write return the new value.  The reader thread is held
    at that point by a trace hook while the main thread writes."""
    store = backend.store()
    s = store.storage("race")
    s.x = 1
    store.load()  # forget remembered values: the next read finds x in the log
    found, written = threading.Event(), threading.Event()
    got: list[Any] = []

    def hold_after_finding(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not Storage.__getattr__.__code__:
            return None

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line" and "data" in frame.f_locals and not found.is_set():
                found.set()  # the reader holds the value it found: let the write happen
                assert written.wait(60)
            return local

        return local

    def read() -> None:
        sys.settrace(hold_after_finding)
        try:
            got.append(store.storage("race").x)
        finally:
            sys.settrace(None)

    reader = threading.Thread(target=read)
    reader.start()
    assert found.wait(60)
    s.x = (2,)  # not a plain scalar: only found in the log
    written.set()
    reader.join()
    assert got == [1]  # the value when it was read
    assert s.x == (2,)
    assert store.storage("race").x == (2,)
    store.close()
