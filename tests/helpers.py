"""Small helpers shared by the behaviour tests."""

from __future__ import annotations

import inspect
from typing import Any

from appendmuch import Storage, Store, Value


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
