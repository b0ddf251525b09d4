"""Small helpers shared by the behaviour tests."""

from __future__ import annotations

import inspect
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from appendmuch import Codec, Storage, Store, Value
from appendmuch.errors import WriteError


def next_line() -> int:
    """The line number of the statement right after the caller's call of this."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def where(function: str, line: int) -> str:
    """The context string of a write made by ``function`` at ``line`` of the calling
    test module."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return f"{frame.f_back.f_globals['__name__']}.{function}:{line}"


def history(storage: Storage, field: str) -> tuple[Value, ...]:
    """A field's history as a tuple of Values."""
    return tuple(storage.__history__()[field])


def datas(storage: Storage, field: str) -> list[Any]:
    """The data of every entry of a field, oldest first."""
    return [v.data for v in history(storage, field)]


def codec_with(
    cls: type[Any],
    type_id: int,
    encode: Callable[[Any], bytes],
    decode: Callable[[bytes], Any],
    *,
    mutable: bool = False,
) -> Codec:
    """A new Codec that knows ``cls`` as well (registered under ``type_id``)."""
    codec = Codec()
    codec.register(cls, type_id, encode, decode, mutable=mutable)
    return codec


def close_fails(store: Store) -> WriteError:
    """``store.close()`` must raise WriteError (its unwritten rows go to a recovery
    file); the error."""
    import pytest

    with pytest.raises(WriteError) as info:
        store.close()
    return info.value


def python_without(modules: tuple[str, ...], code: str) -> Any:
    """Run ``code`` in a new interpreter in which importing any of ``modules`` raises
    ImportError (as if not installed); the finished process, output captured."""
    import subprocess
    import sys

    hide = "".join(f"sys.modules[{name!r}] = None; " for name in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {hide}\n{code}"], capture_output=True, text=True
    )


def settled(store: Store) -> None:
    """Every own write committed and reported to ``on_change``: at once in
    single-writer mode; in shared mode at commit, a few milliseconds after the write
    (``flush()`` commits, and reports, before it returns)."""
    if store.driver.sharing is not None:
        store.flush()


def kept_to_the_end(store: Store) -> bool:
    """Whether a ``with`` block's writes wait for its outermost end (shared mode), or
    are written at once as in single-writer mode (SPEC section 4)."""
    return store.driver.sharing is not None


#: files whose code the garbage collector runs (weak reference and gc callbacks)
_GC_CALLBACK_FILES = ("/weakref.py", "/_weakrefset.py")


def in_gc_callback(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a callback of the garbage collector (a weak
    reference's finalizer, a gc callback), which may run in the middle of any
    allocation.  Tests that inject interrupts leave those alone: the interpreter prints
    and drops an exception raised there, and CPython 3.11 can crash when a trace
    function raises in one."""
    depth = 0
    while frame is not None and depth < 12:
        name = frame.f_code.co_filename
        if name.endswith(_GC_CALLBACK_FILES) or "/hypothesis/" in name:
            return True
        frame = frame.f_back
        depth += 1
    return False


def interrupted(tracer: Any, call: Callable[..., object], *args: Any) -> bool:
    """Run ``call(*args)`` with ``tracer`` as this thread's trace function (one that
    raises KeyboardInterrupt somewhere); whether it was interrupted."""
    import sys

    sys.settrace(tracer)
    try:
        call(*args)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)


def run_threads(threads: list[threading.Thread], hung: str, patience: float = 120.0) -> None:
    """Start every thread, then wait for each (at most ``patience`` seconds); asserts
    that none is still running (``hung`` says what that would mean)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(patience)
    assert not any(thread.is_alive() for thread in threads), hung


#: how long a test waits for something a background thread does (a limit, never a
#: threshold: it only bounds a hang)
PATIENCE = 60.0


def wait_for(
    condition: Callable[[], bool], what: str, patience: float = PATIENCE, poll: float = 0.005
) -> float:
    """Poll ``condition`` (every ``poll`` seconds) until true; the seconds it took.  Fails
    the test after ``patience`` seconds, naming ``what`` was awaited: the one polling
    helper of the suite."""
    import pytest

    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > patience:
            pytest.fail(f"gave up after {patience:.0f} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start


class CtrlC:
    """SIGALRM every 0.1 to 3 ms, raising KeyboardInterrupt in the main thread (once per
    arming) while ``armed``: Ctrl-C landing anywhere in a call.  With ``spare_gc`` it
    never lands in a garbage-collector callback (see :func:`in_gc_callback`)."""

    def __init__(self, seed: int, *, spare_gc: bool = False) -> None:
        self.rng = random.Random(seed)
        self.spare_gc = spare_gc
        self.armed = False
        self.landed = 0
        self._stopping = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return  # (a signal that arrived as __exit__ began: never re-arm the timer)
        signal.setitimer(signal.ITIMER_REAL, self.rng.uniform(1e-4, 3e-3))
        if self.armed and not (self.spare_gc and in_gc_callback(frame)):
            self.armed = False
            self.landed += 1
            raise KeyboardInterrupt

    def __enter__(self) -> CtrlC:
        self._previous = signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, 1e-3)
        return self

    def __exit__(self, *exc: object) -> None:
        # A signal that arrived just before this runs its handler just after the timer
        # is stopped; re-armed then, it would fire once the default handler is back,
        # and SIGALRM's default kills the process (seen: "Alarm clock", a crashed worker).
        self._stopping = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
