"""KeyboardInterrupt (Ctrl-C) anywhere in the write path, caught by the application.

An *acknowledged* write is an assignment that returned; in batched mode it must be
committed once a later ``flush()`` returns.  Whatever statement of the driver's write
path an interrupt hits (queueing, taking a batch, the transaction, the pipeline, the
commit, dropping committed rows from the queue, closing), no acknowledged row may be
lost or written twice, the Store must not be wedged (a SQLite transaction left open,
a PostgreSQL pipeline out of step), and ``flush()``/``close()`` must return.

Two ways of interrupting, on every backend:

- deterministic: a trace function (``sys.settrace``, in the thread that writes) raises
  KeyboardInterrupt at the k-th line executed in ``appendmuch/drivers``, for every k
  until a whole cycle of writes and a flush runs through without reaching k;
- random: SIGALRM at random moments (20 us to 2 ms apart) raises KeyboardInterrupt while
  the application writes and flushes, with the background flusher running, until a
  fixed number of interrupts landed in the drivers' code.
"""

from __future__ import annotations

import dis
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import appendmuch.drivers
from appendmuch import Store
from appendmuch.drivers.wakeup import Answer
from backends import Backend, PostgresBackend
from helpers import in_gc_callback, interrupted

HOLD = 3600.0
DRIVERS = str(Path(appendmuch.drivers.__file__).parent)
#: interrupts the random test delivers per backend
RANDOM_INTERRUPTS = 300
#: give up on the random test after this long (a limit, never a threshold)
PATIENCE = 120.0


def is_replace(dbns: str, field: str) -> bool:
    return field.startswith("r_")


def interrupt_at(k: int, also: Collection[CodeType] = ()) -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt at the k-th line run in the drivers
    (and in the functions of ``also``)."""
    seen = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not not_interruptible(frame) and not in_gc_callback(frame):
            seen[0] += 1
            if seen[0] == k:
                raise KeyboardInterrupt(f"injected at line {k}")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        return local if code.co_filename.startswith(DRIVERS) or code in also else None

    return calls


#: code object -> offsets of the line starts no real interrupt can land on
_NOT_INTERRUPTIBLE: dict[CodeType, frozenset[int]] = {}


def not_interruptible(frame: FrameType) -> bool:
    """Whether a line event comes where a trace function can raise but a real Ctrl-C
    cannot, so that it is no interrupt point:

    - a ``with`` block's normal exit (the ``with`` line again): the exit loads three
      Nones and calls ``__exit__`` (for a lock, C code that releases it) without
      checking for signals in between, but a trace function raising before it leaves
      the lock held;
    - a ``NOP`` (the ``try:`` line): it cannot raise, so the compiler leaves it out of
      the exception handlers' ranges, and a trace function raising there skips the
      enclosing ``with`` block's exit (again leaving a lock held)."""
    code = frame.f_code
    skipped = _NOT_INTERRUPTIBLE.get(code)
    if skipped is None:
        ops = [(ins.offset, ins.opname, ins.argval) for ins in dis.get_instructions(code)]
        found = set()
        for i in range(len(ops)):
            if ops[i][1] == "NOP":
                found.add(ops[i][0])
            # (``return`` inside the block first swaps the value under the exit)
            start = i + 1 if ops[i][1] == "SWAP" else i
            window = ops[start : start + 5]
            if all(op == "LOAD_CONST" and val is None for _, op, val in window[:3]) and any(
                op == "CALL" for _, op, _ in window[3:]
            ):
                found.add(ops[i][0])
        skipped = _NOT_INTERRUPTIBLE[code] = frozenset(found)
    return frame.f_lasti in skipped


class Ledger:
    """What the application was told: acknowledged values per field."""

    def __init__(self) -> None:
        self.plain: list[int] = []
        #: replace-semantics field: every value tried, and the last acknowledged one
        self.tried: list[int] = []
        self.latest: int | None = None

    def check(self, backend: Backend, store: Store) -> None:
        """Every acknowledged plain value is stored exactly once; the replace field's
        newest row holds the latest acknowledged value or one tried after it.

        (An interrupt between the Store updating its cache and queueing an overwrite
        can leave the field's previous row in place beside the newer one: the Store
        already counts the interrupted entry as the latest.  No acknowledged value is
        lost that way, so only the newest row is checked here.)"""
        values: dict[str, list[int]] = {"v": [], "r_x": []}
        for row in stored_rows(backend):
            if row[3] is not None and row[2] in values:
                values[row[2]].append(store.codec.decode(row[3]))
        stored = values["v"]
        assert len(stored) == len(set(stored)), "a row was written twice"
        missing = sorted(set(self.plain) - set(stored))
        assert not missing, f"acknowledged writes lost: {missing[:10]}"
        if self.latest is not None:
            assert values["r_x"], "the replace field lost its value"
            assert values["r_x"][-1] in self.tried[self.tried.index(self.latest) :]


def stored_rows(backend: Backend) -> list[tuple[Any, ...]]:
    """The rows stored, by seq (PostgreSQL: one plain query, not a driver and its pool)."""
    if not isinstance(backend, PostgresBackend):
        return backend.raw_rows()
    import psycopg

    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT seq, namespace, field, value, created_at, context FROM "{backend.prefix}'
            '_values" ORDER BY seq'
        ).fetchall()
    return [(*row[:3], None if row[3] is None else bytes(row[3]), *row[4:]) for row in rows]


def cycle(store: Store, ledger: Ledger, base: int) -> None:
    """Writes filling a batch (batch_size 3), an overwrite, a flush."""
    s = store.storage("i")
    for j in range(4):
        s.v = base + j
        ledger.plain.append(base + j)
    ledger.tried.append(base)
    s.r_x = base
    ledger.latest = base
    store.flush()


@pytest.fixture
def opened(backend: Backend, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def open_store(**kwargs: Any) -> Store:
        if backend.name != "memory":
            kwargs.setdefault("recovery_dir", tmp_path)
        driver = backend.driver(**kwargs) if backend.name != "memory" else backend.driver()
        store = Store(driver, replace_predicate=is_replace)
        made.append(store)
        return store

    yield open_store
    for store in made:
        store.close()


@pytest.mark.slow
class TestInjectedAtEachLine:
    def test_writes_and_flushes(self, backend: Backend, opened: Callable[..., Store]) -> None:
        """An interrupt at each line of the drivers' write path in turn; after each, a
        flush succeeds and every acknowledged row is stored exactly once."""
        store = opened(batch_size=3, batch_interval=HOLD)
        ledger = Ledger()
        k = 0
        while True:
            k += 1
            reached = interrupted(interrupt_at(k), cycle, store, ledger, 100 * k)
            store.flush()
            if backend.name != "memory":
                # (Memory re-sorts its rows for a read, and then re-indexes them all at
                # the next overwrite: reading here would make each cycle longer.)
                ledger.check(backend, store)
            if not reached:
                break
        ledger.check(backend, store)
        print(f"{backend.name}: {k - 1} interrupts survived (one per line of the write path)")
        assert k > 1 or backend.name == "memory"
        store.close()
        reopened = opened()
        ledger.check(backend, reopened)

    def test_close(self, backend: Backend, opened: Callable[..., Store]) -> None:
        """An interrupt at each line of the driver's close(): closing again completes,
        the table can be opened again at once (the lock is released), and every
        acknowledged row is stored."""
        ledger = Ledger()
        k = 0
        while True:
            k += 1
            store = opened(batch_size=3, batch_interval=HOLD)
            s = store.storage("i")
            for j in range(5):
                s.v = 100 * k + j
                ledger.plain.append(100 * k + j)
            reached = interrupted(interrupt_at(k), store.driver.close)
            store.driver.close()
            store.close()
            ledger.check(backend, store)
            if not reached:
                break
        # (each iteration's new Store showed the lock released; so does this one)
        ledger.check(backend, opened())
        print(f"{backend.name}: {k - 1} interrupts of close() survived")


@pytest.mark.slow
class TestRandomSignals:
    def test_sigalrm_at_random_moments(
        self, backend: Backend, opened: Callable[..., Store]
    ) -> None:
        """SIGALRM raises KeyboardInterrupt at random moments while the application
        writes (batches of 10, the flusher running every 20 ms) and flushes, until
        RANDOM_INTERRUPTS landed in the drivers' code.  No acknowledged row is lost."""
        store = opened(batch_size=10, batch_interval=0.02)
        rng = random.Random(12)
        ledger = Ledger()
        armed = [False]
        landed = [0]

        stopping = [False]

        def handler(signum: int, frame: FrameType | None) -> None:
            if stopping[0]:
                return  # (never re-armed once stopping: see helpers.CtrlC.__exit__)
            delay = rng.uniform(20e-6, 2e-3)
            in_drivers = frame is not None and frame.f_code.co_filename.startswith(DRIVERS)
            if armed[0] and in_drivers and not in_gc_callback(frame):
                landed[0] += 1
                if landed[0] < RANDOM_INTERRUPTS:
                    signal.setitimer(signal.ITIMER_REAL, delay)
                raise KeyboardInterrupt
            signal.setitimer(signal.ITIMER_REAL, delay)

        previous = signal.signal(signal.SIGALRM, handler)
        s = store.storage("i")
        i = 0
        deadline = time.monotonic() + PATIENCE
        try:
            signal.setitimer(signal.ITIMER_REAL, 1e-3)
            while landed[0] < RANDOM_INTERRUPTS and time.monotonic() < deadline:
                i += 1
                try:
                    armed[0] = True
                    if i % 7 == 0:
                        store.flush()
                    elif i % 5 == 0:
                        ledger.tried.append(i)
                        s.r_x = i
                        armed[0] = False
                        ledger.latest = i
                    else:
                        s.v = i
                        armed[0] = False
                        ledger.plain.append(i)
                except KeyboardInterrupt:
                    pass
                finally:
                    armed[0] = False
        finally:
            stopping[0] = True
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert landed[0] >= RANDOM_INTERRUPTS, f"only {landed[0]} interrupts in {PATIENCE} s"
        store.flush()
        ledger.check(backend, store)
        store.close()
        ledger.check(backend, opened())
        print(f"{backend.name}: {landed[0]} random interrupts survived, {i} operations")


def interrupt_in_load(after: int) -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt inside ``Store.rebuild``'s row loop
    once ``after`` rows were read (the driver's row iterator suspended mid-way)."""

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_locals.get("seq", 0) >= after:
            raise KeyboardInterrupt(f"injected in load after seq {after}")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is Store.rebuild.__code__ else None

    return calls


def interrupt_waiting_for_answer() -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt where this thread waits for the
    background thread's answer (shared mode loads there: Ctrl-C can only land in the
    wait, and the background thread finishes the load)."""

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            raise KeyboardInterrupt("injected while waiting for the load")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is Answer.take.__code__ else None

    return calls


class TestInterruptedLoad:
    def test_load_cut_short_holds_no_lock(
        self, backend: Backend, opened: Callable[..., Store]
    ) -> None:
        """Ctrl-C in the middle of ``store.load()``, with the traceback kept (as a
        notebook keeps the last one): the driver's lock is free for its other threads
        (flusher, follower), writes go on, and a load then matches a fresh reopen."""
        store = opened(batch_size=3, batch_interval=HOLD)
        ledger = Ledger()
        s = store.storage("i")
        for i in range(10):
            s.v = i
            ledger.plain.append(i)
        store.flush()
        shared = store.driver.sharing is not None
        sys.settrace(interrupt_waiting_for_answer() if shared else interrupt_in_load(3))
        try:
            store.load()
        except KeyboardInterrupt as exc:
            kept = exc  # the traceback keeps the frames (and their iterators) alive
        else:
            raise AssertionError("the interrupt did not land in load()")
        finally:
            sys.settrace(None)
        if shared:
            store.sync()  # (after the load it was asked for, which the engine finishes)
        lock = getattr(store.driver, "_lock", None)
        if lock is not None:
            free: list[bool] = []

            def probe() -> None:
                got = lock.acquire(blocking=False)
                free.append(got)
                if got:
                    lock.release()

            thread = threading.Thread(target=probe)
            thread.start()
            thread.join()
            assert free == [True], "the driver's lock is held by a suspended row iterator"
        store.load()
        for i in range(10, 20):
            s.v = i
            ledger.plain.append(i)
        store.flush()
        ledger.check(backend, store)
        assert [e.data for e in store.storage("i").__history__()["v"]] == list(range(20))
        del kept
        store.close()
        fresh = opened()
        ledger.check(backend, fresh)
        assert [e.data for e in fresh.storage("i").__history__()["v"]] == list(range(20))
