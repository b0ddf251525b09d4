"""An exclusive lock among the processes of one machine, granted in the order it was asked.

An exclusive ``flock`` is not fair: a process that lets go can take it again at once while
others wait.  :class:`FifoLock` puts a queue in front of it, made of files and ``flock``
only, so the kernel releases whatever a killed process held and nothing needs a reaper.

**Files.**  ``path`` is the lock file proper (the *lease*).  The directory ``path +
".fifo"`` beside it holds ``queue``, whose 16 bytes name the last requester in line (the
*tail*), and one ``<name>.node`` per requester, locked by its owner while it waits or
holds: 16 bytes naming its predecessor (``-`` * 16: none), then ``R`` once released.

**Protocol** (CLH-style).  A requester creates and locks its node; under a brief ``flock``
of ``queue`` it copies the tail into its node and makes itself the tail: its place in
line.  It waits for its predecessor's node lock.  Once that is free, ``R`` (or nothing
before it) means the lock passed through; otherwise its owner gave up or died waiting,
and the requester *splices it out* (adopts its predecessor, then deletes it) and waits
again.  First in line, it takes the lease's ``flock``.  Releasing writes ``R``, unlocks
the lease, then the node, which wakes the successor.

**FIFO**: each requester waits for the one ahead of it only, and one that asks again
queues behind everyone in line; those that leave are skipped, nobody else's place moves.
**Exclusion** never rests on the queue: whoever comes through it still takes the lease's
``flock``, so a dead holder's successor (the kernel frees both its locks, in no set
order), or anything else that reaches the lease early, waits there.

**Cleaning up.**  A successor deletes the nodes it passes; a requester that gives up last
in line takes itself out of ``queue``.  A process killed between creating its node and
joining the line (or mid-splice) leaves a node no path leads to: every 64th grant, and
after a splice, the holder deletes such nodes (once 10 s old).  So the directory holds
about one file per requester in line, plus two.

**Interrupts.**  Files are file objects, stored before they are locked and closed
(which frees their locks) in a ``finally``, ``except`` or ``with`` of the function that
opened them, and no descriptor number is ever held bare: a KeyboardInterrupt landing
anywhere, even right after an open whose result is lost (the object's collection closes
it), leaves no lock held and no descriptor open.

**Costs.**  Uncontended acquire plus release: about twenty system calls.  A wait costs a
short-lived thread: ``flock`` cannot time out, so the blocking call runs there and the
caller waits for it with a timeout.

>>> import os, tempfile
>>> lock = FifoLock(os.path.join(tempfile.mkdtemp(), "table.lease"))
>>> lock.acquire(timeout=5.0)
>>> lock.held
True
>>> lock.release()
>>> lock.close()
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import io
import os
import threading
import time
import weakref
from collections.abc import Callable
from string import hexdigits

__all__ = ["Cancel", "FifoLock"]

_NONE = b"-" * 16  # no predecessor (node) / nobody in line (queue)
_RELEASED = b"R"
_SWEEP_EVERY = 64
_ORPHAN_AGE = 10.0  # seconds: a node is locked an instant after its creation
_HEX = frozenset(hexdigits.encode())


def _token(raw: bytes) -> bytes | None:
    """A node's 16-byte name as read from a file; None for "none" (or bytes not a name)."""
    return raw if len(raw) == 16 and _HEX.issuperset(raw) else None


class Cancel:
    """A flag that makes waits under way give up: :meth:`FifoLock.acquire` then raises
    :class:`InterruptedError`.  :meth:`set` may be called from any thread; it stays set."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._set = False
        self._waiters: set[_Waiter] = set()

    def set(self) -> None:
        """Cancel every wait watching this flag, now and later.  O(waits)."""
        with self._guard:
            self._set = True
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.wake()

    def is_set(self) -> bool:
        return self._set

    def set_in_child(self) -> None:
        """Package-internal (fork handler): set, waking nobody; the guard may have been
        held by a thread of the parent, which the child does not have."""
        self._set = True

    def watch(self, waiter: _Waiter) -> None:
        """Package-internal: :meth:`set` wakes ``waiter`` until :meth:`unwatch`."""
        with self._guard:
            self._waiters.add(waiter)

    def unwatch(self, waiter: _Waiter) -> None:
        """Package-internal: the end of :meth:`watch`."""
        with self._guard:
            self._waiters.discard(waiter)


_lending = threading.RLock()  # (reentrant: a collected _File's close may run under it)


class _File(io.FileIO):
    """A file a :class:`_Waiter` thread may borrow: closed while the thread is blocked in
    ``flock`` on it, it is closed by that thread once the call returns.  So no descriptor
    number is ever held outside a file object (a KeyboardInterrupt cannot lose one), and
    none is closed under a blocked call (its number could be reused meanwhile)."""

    _lent = False
    _close_when_back = False

    def close(self) -> None:
        with _lending:
            if self._lent:
                self._close_when_back = True
                return
            super().close()

    def lend(self) -> bool:
        """Package-internal (the waiter thread): False if closed already."""
        with _lending:
            if self.closed:
                return False
            self._lent = True
            return True

    def give_back(self) -> None:
        """Package-internal (the waiter thread): the end of :meth:`lend`."""
        with _lending:
            self._lent = False
            if self._close_when_back:
                super().close()


def _open(path: str, mode: str) -> _File:
    """``path`` opened (``mode`` "r" or "r+"), created first if missing."""
    try:
        return _File(path, mode)
    except FileNotFoundError:
        io.FileIO(path, "a").close()
        return _File(path, mode)


def _check(cancels: tuple[Cancel, ...]) -> None:
    for cancel in cancels:
        if cancel.is_set():
            raise InterruptedError("the wait for the lock was cancelled")


class _Waiter:
    """A blocking ``flock`` in a short-lived thread, on a file the thread borrows.

    A grant is held by the caller's file, so the caller closing it, as it always does in
    the end, frees the lock even when granted after the caller gave up (the thread then
    closes it, see :class:`_File`).  The caller sleeps on a bare lock that the thread (or a
    cancel) releases: ``Event.wait``'s ``Condition`` can be left inconsistent by a
    KeyboardInterrupt, ``lock.acquire`` cannot.
    """

    def __init__(self, file: _File, mode: int) -> None:
        self.granted = False
        self.error: OSError | None = None
        self._signal = threading.Lock()  # a one-shot signal: released = woken
        self._signal.acquire()
        # (not threading.Thread: its start() waits on an Event)
        _thread.start_new_thread(self._run, (file, mode))

    def _run(self, file: _File, mode: int) -> None:
        try:
            if not file.lend():  # (the caller gave up and closed it first)
                self.error = InterruptedError("the file was closed")
                return
            try:
                fcntl.flock(file.fileno(), mode)
                self.granted = True
            except OSError as exc:
                self.error = exc
            finally:
                file.give_back()
        finally:
            self.wake()

    def wake(self) -> None:
        """Ends :meth:`sleep`; any thread, any number of times."""
        with contextlib.suppress(RuntimeError):  # (woken already)
            self._signal.release()

    def sleep(self, deadline: float | None) -> None:
        """Until woken (granted, failed or cancelled) or ``deadline``; then check state."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        self._signal.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))


def _lock(
    file: _File, deadline: float | None, cancels: tuple[Cancel, ...], mode: int = fcntl.LOCK_EX
) -> None:
    """A ``flock`` on ``file`` (exclusive unless ``mode`` says), waited for until
    ``deadline`` (monotonic; None: no limit) unless a cancel fires.  The caller closes
    ``file`` in the end whatever happens, which also frees a grant that came after a
    timeout.  Uncontended: one system call."""
    _check(cancels)
    try:
        fcntl.flock(file.fileno(), mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiter = _Waiter(file, mode)
    try:
        for cancel in cancels:
            cancel.watch(waiter)
        _check(cancels)  # (set before it watched: its set() did not wake this waiter)
        waiter.sleep(deadline)
    finally:
        for cancel in cancels:
            cancel.unwatch(waiter)
    _check(cancels)
    if waiter.granted:
        return
    if waiter.error is not None:
        raise waiter.error
    raise TimeoutError("the lock was not granted in time")


class FifoLock:
    """An exclusive lock among processes (and among objects in one process), granted FIFO.

    ``path`` is the lock file (created if missing); the queue lives in ``path + ".fifo"``.
    One object is used by one thread at a time, except :meth:`close`, which any thread may
    call to cancel a wait under way.  Each object has open file descriptions of its own, so
    two objects on one path exclude each other like two processes.  Not reentrant.  A
    child made by ``fork`` closes the lock's files (so that the parent's release frees the
    lock) and cannot use the object.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        #: the queue's folder: the queue file and one node file per waiter
        self.folder = self.path + ".fifo"
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.folder)
        self._queue = os.path.join(self.folder, "queue")
        self._closing = Cancel()
        self._guard = threading.Lock()
        self._node: io.FileIO | None = None  # our node, locked while in line or holding
        self._lease: _File | None = None  # the lock file, locked while holding
        self._sweep_in = 0  # grants until the next sweep (0: sweep at the first)
        self._wait: tuple[float | None, tuple[Cancel, ...]] = (None, ())  # (acquire's)
        _instances.add(self)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lease is not None

    def acquire(
        self,
        *,
        timeout: float | None = 10.0,
        cancel: Cancel | None = None,
        on_queued: Callable[[], object] | None = None,
    ) -> None:
        """Wait for the lock, behind everyone who asked before; return once it is held.

        ``on_queued`` is called (in this thread) as soon as this request has its place in
        line.  Raises :class:`TimeoutError` after ``timeout`` seconds (None: no limit),
        :class:`InterruptedError` when ``cancel`` is set or :meth:`close` is called; on
        any failure (KeyboardInterrupt too) nothing is held and those queued behind move
        up.  O(1) plus the wait, plus O(k) per k requesters ahead that left the line.
        """
        if self._node is not None:
            raise RuntimeError(f"FifoLock {self.path!r} is held already (not reentrant)")
        deadline = None if timeout is None else time.monotonic() + timeout
        cancels = (self._closing,) if cancel is None else (self._closing, cancel)
        self._wait = (deadline, cancels)
        token = os.urandom(8).hex().encode()
        node: io.FileIO | None = None
        lease: _File | None = None
        try:
            _check(cancels)
            node = io.FileIO(self._node_path(token), "x+")
            fcntl.flock(node.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            pred = self._enqueue(node.fileno(), token)
            if on_queued is not None:
                on_queued()
            while pred is not None:
                pred = self._pass(node.fileno(), pred)
            lease = _open(self.path, "r")
            _lock(lease, *self._wait)
            if self._sweep_in <= 0:
                with contextlib.suppress(OSError):
                    self._sweep()
            self._sweep_in -= 1
            with self._guard:
                _check((self._closing,))  # (close() came first: give it back)
                self._node, self._lease = node, lease
        except BaseException as exc:
            if node is not None and self._node is node:  # granted, then interrupted
                self.release()
            elif node is not None:
                try:
                    if lease is not None:
                        lease.close()
                    self._leave(node.fileno(), token)
                finally:
                    node.close()  # (lets our successor go on: it splices us out)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"FifoLock {self.path!r}: not granted within {timeout} s"
                ) from None
            raise

    def release(self) -> None:
        """Hand the lock to the next in line.  O(1).  After :meth:`close`, a no-op."""
        with self._guard:
            node, lease = self._node, self._lease
            if node is None or lease is None:
                if self._closing.is_set():
                    return
                raise RuntimeError(f"FifoLock {self.path!r} is not held")
            try:
                os.pwrite(node.fileno(), _RELEASED, 16)
            finally:
                self._node = self._lease = None
                try:
                    lease.close()  # first, so that the successor finds the lease free
                finally:
                    node.close()  # wakes the successor

    def close(self) -> None:
        """Cancel a wait under way (from any thread), release the lock if held; final."""
        self._closing.set()
        self.release()

    # ------------------------------------------------------------------ the queue

    def forget_in_child(self) -> None:
        """Package-internal (fork handler): close this object's files, never unlocking
        them (the parent holds the locks), and cancel its waits for good."""
        for file in (self._node, self._lease):
            if file is not None:
                with contextlib.suppress(OSError):  # (not _File.close: a parent's thread
                    io.FileIO.close(file)  # may have held its guard at the fork)
        self._node = self._lease = None
        self._closing.set_in_child()

    def _node_path(self, token: bytes) -> str:
        return f"{self.folder}/{token.decode()}.node"

    def _enqueue(self, node: int, token: bytes) -> bytes | None:
        """Take our place in line (the tail); our predecessor's name, None if first."""
        with _open(self._queue, "r+") as queue:
            _lock(queue, *self._wait)
            pred = _token(os.pread(queue.fileno(), 16, 0))
            os.pwrite(node, pred or _NONE, 0)
            os.pwrite(queue.fileno(), token, 0)
            return pred

    def _pass(self, node: int, pred: bytes) -> bytes | None:
        """Wait until ``pred`` lets go: None if the lock passed through it, else (it left the
        line) its own predecessor, which is ours from now on."""
        path = self._node_path(pred)
        try:
            file = _File(path, "r")
        except FileNotFoundError:
            return None  # it held the lock and the requester after it deleted it
        with file:
            _lock(file, *self._wait, fcntl.LOCK_SH)  # (shared: a given-up waiter's
            record = os.pread(file.fileno(), 17, 0)  # thread may be waiting on it too)
            ahead = None if record[16:] == _RELEASED else _token(record[:16])
            if ahead is not None:
                # it gave up or died waiting: point past it before deleting it, so that
                # whoever reads our node (a successor, a sweep) never finds a gap
                os.pwrite(node, ahead, 0)
                self._sweep_in = 0  # (a death may have left an orphan)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return ahead

    def _leave(self, node: int, token: bytes) -> None:
        """Before giving up (the caller then closes ``node``): if nobody is behind us, take
        ourselves out of ``queue``; otherwise our successor will splice us out."""
        pred = os.pread(node, 16, 0)
        if not pred:  # never got into line
            os.unlink(self._node_path(token))
            return
        with _open(self._queue, "r+") as queue:
            try:
                fcntl.flock(queue.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # someone is joining the line, behind us most likely: leave it to them
            if os.pread(queue.fileno(), 16, 0) == token:
                os.pwrite(queue.fileno(), pred, 0)
                os.unlink(self._node_path(token))

    def _sweep(self) -> None:
        """Delete orphaned nodes: unlocked, unreachable from the tail and not just created.
        Holding ``queue`` (never waiting for it: busy, it raises) keeps requesters from
        joining meanwhile."""
        with _open(self._queue, "r+") as queue:
            fcntl.flock(queue.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            keep = self._reachable(_token(os.pread(queue.fileno(), 16, 0)))
            if keep is None:
                return  # (at the next grant)
            self._sweep_in = _SWEEP_EVERY
            old = time.time() - _ORPHAN_AGE
            for name in os.listdir(self.folder):
                if not name.endswith(".node") or name[:-5].encode() in keep:
                    continue
                path = os.path.join(self.folder, name)
                missing_or_busy = contextlib.suppress(FileNotFoundError, BlockingIOError)
                with missing_or_busy, io.FileIO(path, "r") as node:
                    if os.fstat(node.fileno()).st_mtime < old:
                        fcntl.flock(node.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        os.unlink(path)

    def _reachable(self, tail: bytes | None) -> set[bytes] | None:
        """The nodes a requester may still visit: from the tail back to the first released,
        missing or first-in-line one.  None when it cannot tell (then delete nothing)."""
        for _ in range(100):  # a restart per splice seen; splices end
            seen: set[bytes] = set()
            token, referrer = tail, b""
            while token is not None and token not in seen:
                record = self._read(token)
                if record is None:  # deleted by the requester that passed it: the end,
                    if referrer and (self._read(referrer) or b"")[:16] != token:
                        break  # unless spliced out since we read the way to it: again
                    return seen
                seen.add(token)
                if record[16:] == _RELEASED or record[:16] == _NONE:
                    return seen
                referrer = token
                token = _token(record[:16])
                if token is None:
                    return None  # (a torn read of a predecessor being rewritten)
            else:
                return seen
        return None

    def _read(self, token: bytes) -> bytes | None:
        try:
            with open(self._node_path(token), "rb") as file:
                return file.read(17)
        except FileNotFoundError:
            return None


_instances: weakref.WeakSet[FifoLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    # A forked child shares its parent's open file descriptions, and closing frees a
    # flock only with the last copy: the child's would keep the parent's locks (a wait's
    # in another thread too) while it lives.  Close them all (never unlock: the parent
    # holds them); Linux lists them in /proc, elsewhere the held ones are known.
    locks = list(_instances)
    for lock in locks:
        lock.forget_in_child()
    files = {os.path.realpath(lock.path) for lock in locks}
    folders = tuple(os.path.realpath(lock.folder) + "/" for lock in locks)
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if target in files or target.startswith(folders):
                    os.close(int(name))


os.register_at_fork(after_in_child=_forget_in_child)
