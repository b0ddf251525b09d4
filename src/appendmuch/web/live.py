"""Live updates: rows the Store's follower brings in reach open pages as server-sent events.

The follower thread calls the index's listener for every batch of rows; the listener
wakes the event loop at most once per wake-up (:class:`Hub`), and each open event
stream (``/api/events``) then sends one small JSON message with the log's counts and,
when the page names one, the last change of its namespace or field.  A stream sends at
most one message per :data:`COALESCE` seconds, and a comment line every
:data:`HEARTBEAT` seconds when nothing happens, so a dead connection is noticed.
The pages decide what to fetch again (see ``static/app.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..rendering import iso_time
from .index import LogIndex

__all__ = ["COALESCE", "HEARTBEAT", "Hub", "event_stream"]

#: a stream sends at most one message per this many seconds
COALESCE = 0.1
#: a comment line is sent after this many seconds without a message
HEARTBEAT = 15.0


class Hub:
    """Wakes the event streams when the index changed (thread-safe, coalescing)."""

    def __init__(self, index: LogIndex) -> None:
        self.index = index
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._scheduled = False
        self._flag = threading.Lock()

    def start(self) -> None:
        """Attach to the running event loop and listen to the index."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.index.add_listener(self._poke)

    def stop(self) -> None:
        """Stop listening; every stream ends at its next wake-up."""
        self.closed = True
        self.index.remove_listener(self._poke)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake)

    def _poke(self) -> None:
        """(follower thread) Schedule one wake-up unless one is pending."""
        if self._scheduled:  # (read without the lock: at worst one wake-up too many)
            return
        with self._flag:
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._flag:
            self._scheduled = False
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until the index changes (True) or ``timeout`` seconds pass (False)."""
        changed = self._changed
        if changed is None or self.closed:
            return False
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _message(index: LogIndex, namespace: str | None, field: str | None) -> dict[str, Any]:
    counts = index.counts()
    message: dict[str, Any] = {
        "version": counts.version,
        "rows": counts.rows,
        "last_seq": counts.last_seq,
        "last_time": iso_time(counts.last_time),
        "namespaces": counts.namespaces,
        "fields": counts.fields,
        "deleted_fields": counts.deleted_fields,
        "tombstones": counts.tombstones,
    }
    if namespace is not None:
        refs = index.namespace_fields(namespace)
        if field is not None:
            refs = [ref for ref in refs if ref.name == field]
        seqs = [ref.log.seqs for ref in refs]
        message["changes"] = sum(len(column) for column in seqs)
        message["last_change"] = max((column[-1] for column in seqs if len(column)), default=None)
    return message


async def event_stream(
    hub: Hub, namespace: str | None = None, field: str | None = None
) -> AsyncIterator[str]:
    """The ``text/event-stream`` of one page: a message now, then one after each
    change (at most every :data:`COALESCE` s); ends when the hub stops."""
    yield "retry: 2000\n\n"
    sent: tuple[Any, ...] | None = None
    while not hub.closed:
        message = _message(hub.index, namespace, field)
        # a namespace's or field's page hears of its own changes only
        key = (
            (message["version"],)
            if namespace is None
            else (message["changes"], message["last_change"])
        )
        if key != sent:
            sent = key
            yield f"event: log\ndata: {orjson.dumps(message).decode()}\n\n"
        if not await hub.wait(HEARTBEAT):
            if hub.closed:
                return
            yield ": still here\n\n"
            continue
        await asyncio.sleep(COALESCE)
