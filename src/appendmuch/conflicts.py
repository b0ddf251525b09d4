"""Re-running a ``with`` block that met a newer write from another process."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .errors import ConflictError

__all__ = ["retry_on_conflict"]

F = TypeVar("F", bound=Callable[..., Any])

#: attempts made by ``@retry_on_conflict`` without arguments
DEFAULT_ATTEMPTS = 10


@overload
def retry_on_conflict(func: F, /) -> F: ...


@overload
def retry_on_conflict(*, attempts: int = DEFAULT_ATTEMPTS) -> Callable[[F], F]: ...


def retry_on_conflict(
    func: F | None = None, /, *, attempts: int = DEFAULT_ATTEMPTS
) -> F | Callable[[F], F]:
    """Run the decorated function again when it raises
    :class:`~appendmuch.errors.ConflictError`, up to ``attempts`` times in all; the
    last failure is re-raised.

    A ``with`` block that read a field another writer (a process in shared mode, or
    another thread) changed before the block could write raises ``ConflictError`` and
    writes nothing.  By then the cache holds that newer write, so running the block
    again reads it.  Every conflict means another block got through, so retries end;
    the function should do nothing but the read-modify-write (no side effects that must
    not happen twice).

    >>> from appendmuch import Memory, Store, retry_on_conflict
    >>> counter = Store(Memory()).storage("counter")
    >>> counter.hits = [0]
    >>> @retry_on_conflict(attempts=5)
    ... def hit():
    ...     with counter:
    ...         counter.hits[0] += 1
    >>> hit(); hit()
    >>> with counter:
    ...     counter.hits
    [2]
    """
    if type(attempts) is not int or attempts < 1:
        raise ValueError(f"attempts must be an int of at least 1, got {attempts!r}")

    def decorate(function: F) -> F:
        if not callable(function):
            raise TypeError(f"retry_on_conflict decorates a function, got {function!r}")

        @functools.wraps(function)
        def retrying(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(1, attempts + 1):
                try:
                    return function(*args, **kwargs)
                except ConflictError:
                    if attempt == attempts:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

        return retrying  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate
