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
after a splice, the holder deletes such nodes.  So the directory holds about one file per
requester in line, plus two.

**Costs.**  Uncontended acquire plus release: about twenty system calls.  A wait costs a
short-lived thread: ``flock`` cannot time out, so the blocking call runs there and the
caller waits for it with a timeout (as ``flock.py`` does).

>>> import os, tempfile
>>> lock = FifoLock(os.path.join(tempfile.mkdtemp(), "table.lease"))
>>> lock.acquire(timeout=5.0)
>>> lock.held
True
>>> lock.release()
>>> lock.close()
"""

from __future__ import annotations

import contextlib
import fcntl
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


def _drop(fd: int) -> None:
    """Unlock, then close: ``LOCK_UN`` frees the lock even while a child made by ``fork``
    (in the middle of a wait, say) still has the file open; closing alone would not."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _check(cancels: tuple[Cancel, ...]) -> None:
    for cancel in cancels:
        if cancel._set:
            raise InterruptedError("the wait for the lock was cancelled")


_WAITING, _GRANTED, _ABANDONED, _CLOSED = range(4)


class _Waiter:
    """A blocking ``flock`` on descriptor ``fd`` in a short-lived thread, which can be given up.

    It owns ``fd`` until the caller finds it :attr:`granted`; given up, it closes ``fd`` at
    once if granted, else the thread does when the lock is granted (never while the thread
    may still use the number), which releases it.  The caller sleeps on a bare lock that
    the thread (or a cancel) releases: ``Event.wait``'s ``Condition`` can be left
    inconsistent by a KeyboardInterrupt in the main thread, ``lock.acquire`` cannot.
    """

    def __init__(self, fd: int, mode: int) -> None:
        self.fd, self.mode = fd, mode
        self.error: OSError | None = None
        self._guard = threading.Lock()
        self._state = _WAITING
        self._signal = threading.Lock()  # a one-shot signal: released = woken
        self._signal.acquire()
        try:
            threading.Thread(target=self._run, name="appendmuch-fifolock-wait", daemon=True).start()
        except RuntimeError:  # (no thread started)
            os.close(fd)
            raise
        except BaseException:  # (interrupted while the thread started)
            self.abandon()
            raise

    def _run(self) -> None:
        try:
            fcntl.flock(self.fd, self.mode)
        except OSError as exc:
            self.error = exc
        with self._guard:
            if self._state == _ABANDONED or self.error is not None:
                _drop(self.fd)
                self._state = _CLOSED
            else:
                self._state = _GRANTED
        self.wake()

    def wake(self) -> None:
        """Ends :meth:`sleep`; any thread, any number of times."""
        with contextlib.suppress(RuntimeError):  # (woken already)
            self._signal.release()

    def sleep(self, deadline: float | None) -> None:
        """Until woken (granted, failed or cancelled) or ``deadline``; then check state."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        self._signal.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))

    @property
    def granted(self) -> bool:
        return self._state == _GRANTED

    def abandon(self) -> None:
        with self._guard:
            if self._state == _GRANTED:
                _drop(self.fd)
                self._state = _CLOSED
            elif self._state == _WAITING:
                self._state = _ABANDONED


def _lock(
    fd: int, deadline: float | None, cancels: tuple[Cancel, ...], mode: int = fcntl.LOCK_EX
) -> None:
    """A ``flock`` on ``fd`` (exclusive unless ``mode`` says), waited for until ``deadline``
    (monotonic; None: no limit) unless a cancel fires.  On any failure ``fd`` is closed
    (now, or by the waiting thread once granted), so nothing is held.  Uncontended: one
    system call."""
    try:
        _check(cancels)
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    waiter = _Waiter(fd, mode)
    try:
        for cancel in cancels:
            with cancel._guard:
                cancel._waiters.add(waiter)
        _check(cancels)  # (set before it watched: its set() did not wake this waiter)
        waiter.sleep(deadline)
        _check(cancels)
        if waiter.granted:
            return
        if waiter.error is not None:
            raise waiter.error
        raise TimeoutError("the lock was not granted in time")
    except BaseException:
        waiter.abandon()
        raise
    finally:
        for cancel in cancels:
            with cancel._guard:
                cancel._waiters.discard(waiter)


class FifoLock:
    """An exclusive lock among processes (and among objects in one process), granted FIFO.

    ``path`` is the lock file (created if missing); the queue lives in ``path + ".fifo"``.
    One object is used by one thread at a time, except :meth:`close`, which any thread may
    call to cancel a wait under way.  Each object has open file descriptions of its own, so
    two objects on one path exclude each other like two processes.  Not reentrant.  A
    child made by ``fork`` closes the lock's files (so the parent's release frees the
    lock) and cannot use the object.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._dir = self.path + ".fifo"
        with contextlib.suppress(FileExistsError):
            os.mkdir(self._dir)
        self._queue = os.path.join(self._dir, "queue")
        self._closing = Cancel()
        self._guard = threading.Lock()
        self._node = -1  # our node, locked while in line or holding
        self._lease = -1  # the lock file, locked while holding
        self._sweep_in = 0  # grants until the next sweep (0: sweep at the first)
        self._wait: tuple[float | None, tuple[Cancel, ...]] = (None, ())  # (acquire's)
        _instances.add(self)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lease >= 0

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
        if self._node >= 0:
            raise RuntimeError(f"FifoLock {self.path!r} is held already (not reentrant)")
        deadline = None if timeout is None else time.monotonic() + timeout
        cancels = (self._closing,) if cancel is None else (self._closing, cancel)
        self._wait = (deadline, cancels)
        node, token, lease = -1, b"", -1
        try:
            _check(cancels)
            node, token = self._new_node()
            pred = self._enqueue(node, token)
            if on_queued is not None:
                on_queued()
            while pred is not None:
                pred = self._pass(node, pred)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            _lock(fd, *self._wait)  # (closes fd on failure)
            lease = fd
            with self._guard:
                _check((self._closing,))  # (close() came first: give it back)
                self._node, self._lease = node, lease
            if self._sweep_in <= 0:
                with contextlib.suppress(OSError):
                    self._sweep()
            self._sweep_in -= 1
        except BaseException as exc:
            if node >= 0 and self._node == node:  # granted, then interrupted
                self.release()
            elif node >= 0:
                if lease >= 0:
                    _drop(lease)
                self._abandon(node, token)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"FifoLock {self.path!r}: not granted within {timeout} s"
                ) from None
            raise

    def release(self) -> None:
        """Hand the lock to the next in line.  O(1).  After :meth:`close`, a no-op."""
        with self._guard:
            node, lease = self._node, self._lease
            if node < 0:
                if self._closing.is_set():
                    return
                raise RuntimeError(f"FifoLock {self.path!r} is not held")
            try:
                os.pwrite(node, _RELEASED, 16)
            finally:
                self._node = self._lease = -1
                _drop(lease)  # first, so that the successor finds the lease free
                _drop(node)  # wakes the successor

    def close(self) -> None:
        """Cancel a wait under way (from any thread), release the lock if held; final."""
        self._closing.set()
        self.release()

    # ------------------------------------------------------------------ the queue

    def _node_path(self, token: bytes) -> str:
        return f"{self._dir}/{token.decode()}.node"

    def _new_node(self) -> tuple[int, bytes]:
        """A fresh node file, locked by us: its descriptor and name."""
        for _ in range(8):
            token = os.urandom(8).hex().encode()
            try:
                fd = os.open(self._node_path(token), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:  # (1 in 2**64)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink:
                    return fd, token
            except BlockingIOError:
                pass
            except BaseException:
                _drop(fd)
                raise
            os.close(fd)  # a sweep took it for an orphan before we locked it: next name
        raise OSError(f"could not create a queue node in {self._dir!r}")

    def _enqueue(self, node: int, token: bytes) -> bytes | None:
        """Take our place in line (the tail); our predecessor's name, None if first."""
        fd = os.open(self._queue, os.O_RDWR | os.O_CREAT, 0o666)
        _lock(fd, *self._wait)
        try:
            pred = _token(os.pread(fd, 16, 0))
            os.pwrite(node, pred or _NONE, 0)
            os.pwrite(fd, token, 0)
        finally:
            _drop(fd)
        return pred

    def _pass(self, node: int, pred: bytes) -> bytes | None:
        """Wait until ``pred`` lets go: None if the lock passed through it, else (it left the
        line) its own predecessor, which is ours from now on."""
        path = self._node_path(pred)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # it held the lock and the requester after it deleted it
        _lock(fd, *self._wait, fcntl.LOCK_SH)  # (shared: a given-up waiter's thread may
        try:  # be waiting on it too)
            record = os.pread(fd, 17, 0)
            ahead = None if record[16:] == _RELEASED else _token(record[:16])
            if ahead is not None:
                # it gave up or died waiting: point past it before deleting it, so that
                # whoever reads our node (a successor, a sweep) never finds a gap
                os.pwrite(node, ahead, 0)
                self._sweep_in = 0  # (a death may have left an orphan)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return ahead
        finally:
            _drop(fd)

    def _abandon(self, node: int, token: bytes) -> None:
        """Leave the line without the lock.  Unlocking our node lets our successor splice us
        out; if nobody is behind us, we take ourselves out of ``queue`` here."""
        try:
            pred = os.pread(node, 16, 0)
            if not pred:  # never got into line
                os.unlink(self._node_path(token))
                return
            fd = os.open(self._queue, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.pread(fd, 16, 0) == token:
                    os.pwrite(fd, pred, 0)
                    os.unlink(self._node_path(token))
            except BlockingIOError:
                pass  # someone is joining the line, behind us most likely: leave it to them
            finally:
                _drop(fd)
        finally:
            _drop(node)

    def _sweep(self) -> None:
        """Delete orphaned nodes: unlocked and unreachable from the tail.  Holding ``queue``
        (never waiting for it: busy, it raises) keeps requesters from joining meanwhile; a
        node being created is locked already, or found deleted by its creator."""
        fd = os.open(self._queue, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            keep = self._reachable(_token(os.pread(fd, 16, 0)))
            if keep is None:
                return  # (at the next grant)
            self._sweep_in = _SWEEP_EVERY
            for name in os.listdir(self._dir):
                if not name.endswith(".node") or name[:-5].encode() in keep:
                    continue
                path = os.path.join(self._dir, name)
                with contextlib.suppress(BlockingIOError, FileNotFoundError):
                    node = os.open(path, os.O_RDONLY)
                    try:
                        fcntl.flock(node, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (locked: in use)
                        os.unlink(path)
                    finally:
                        os.close(node)
        finally:
            _drop(fd)

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
    # A forked child shares its parent's open file descriptions.  Releases unlock
    # (_drop), but were the parent killed holding the lock, the child's copies would keep
    # it held while the child lives.  Close them (never unlock: the parent holds it).
    for lock in list(_instances):
        for fd in (lock._node, lock._lease):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        lock._node = lock._lease = -1
        lock._closing._set = True


os.register_at_fork(after_in_child=_forget_in_child)
