"""What the crash-test child processes share: opening a driver, reporting acknowledged writes.

A child is started as ``python tests/crash/<script>.py CONFIG_JSON``.  It prints to stdout
one JSON line per acknowledged write (see :class:`Acks`) and marker lines starting with
``@`` (``@ready``, ``@flushing``, ...), flushing stdout after each, so that the parent
knows what had been acknowledged when it killed the child.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from appendmuch import DBDriver, PostgreSQL, Sqlite3, Store, Value, tuple2dbns

#: values of at most this many bytes are reported in full (hex), longer ones by digest
FULL_VALUE = 256


def make_driver(location: dict[str, Any], **kwargs: Any) -> DBDriver:
    """A driver on ``location``: ``{"kind": "sqlite", "path": ...}`` or
    ``{"kind": "postgresql", "conninfo": ..., "prefix": ...}``."""
    if location["kind"] == "sqlite":
        return Sqlite3(location["path"], **kwargs)
    return PostgreSQL(
        location["conninfo"],
        table_prefix=location["prefix"],
        min_size=1,
        max_size=4,
        timeout=10.0,
        **kwargs,
    )


def is_replace(dbns: str, field: str) -> bool:
    """The replace predicate of every crash-test log: fields named ``r_*``."""
    return field.startswith("r_")


def describe(
    seq: int, dbns: str, field: str, raw: bytes | None, created_at: float, context: str
) -> dict[str, Any]:
    """The JSON report of one row: seq, where, value bytes (hex or digest), time, context."""
    return {
        "seq": seq,
        "ns": dbns,
        "field": field,
        "len": None if raw is None else len(raw),
        "sha": None if raw is None else hashlib.sha256(raw).hexdigest(),
        "hex": raw.hex() if raw is not None and len(raw) <= FULL_VALUE else None,
        "t": created_at,
        "ctx": context,
        "rep": is_replace(dbns, field),
    }


class Acks:
    """Collects every appended entry (``on_change``) until it is acknowledged.

    ``ack()`` prints the collected entries, one JSON line each, and forgets them: call
    it only when the contract says they are committed (an assignment returned in
    write-through mode; ``store.flush()`` returned in batched mode).
    """

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.store: Store | None = None

    def on_change(self, namespace: tuple[str, ...], field: str, value: Value) -> None:
        assert self.store is not None
        raw = None if value.unavailable else self.store.codec.encode(value.data)
        assert value.time is not None
        self.pending.append(
            describe(value.seq, tuple2dbns(namespace), field, raw, value.time, value.context)
        )

    def ack(self) -> None:
        if self.pending:
            sys.stdout.write("".join(json.dumps(entry) + "\n" for entry in self.pending))
            sys.stdout.flush()
            self.pending.clear()


def marker(*words: object) -> None:
    """Print a marker line (``@word ...``) at once."""
    sys.stdout.write("@" + " ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def config() -> dict[str, Any]:
    """The child's configuration: the JSON in argv[1]."""
    loaded: dict[str, Any] = json.loads(sys.argv[1])
    return loaded
