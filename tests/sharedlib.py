"""What the shared-mode (issue 10) tests and their child processes have in common.

The parent and the children (tests/peers/*.py) describe a log the same way: one line
per entry, ``seq``, namespace, field, value bytes (hex; ``-`` for a tombstone), time and
context, sorted by seq (:func:`history_lines`, :func:`row_lines`).  Two processes that
hold identical histories produce identical bytes.  :class:`Seen` records what
``on_change`` reported, in the order it was called, and lets a thread wait (with a bound)
for an entry to arrive.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "crash"))

from childlib import make_driver  # noqa: E402  (tests/crash is on the path now)

from appendmuch import Codec, Store, Value, tuple2dbns  # noqa: E402
from children import PATIENCE, ChildProcess  # noqa: E402
from helpers import codec_with  # noqa: E402

if TYPE_CHECKING:
    from backends import SqlBackend

__all__ = [
    "PEERS",
    "PeerProcess",
    "Peers",
    "Seen",
    "all_values",
    "history_lines",
    "is_replace",
    "make_driver",
    "open_store",
    "row_lines",
]

#: the child scripts
PEERS = TESTS / "peers"


def is_replace(dbns: str, field: str) -> bool:
    """The replace predicate of every shared-mode test log: fields named ``r_*``."""
    return field.startswith("r_")


def line(
    seq: int, dbns: str, field: str, raw: bytes | None, created_at: float | None, context: str
) -> str:
    """One entry as one line of text (the unit of byte-for-byte comparison)."""
    value = "-" if raw is None else raw.hex()
    return f"{seq}\t{dbns}\t{field}\t{value}\t{created_at!r}\t{context}\n"


def history_lines(store: Store) -> list[str]:
    """Every entry in ``store``'s cache, by seq, as :func:`line` lines."""
    encode = store.codec.encode
    out: list[tuple[int, str]] = []
    for namespace, field, values in walk(store.cache):
        dbns = tuple2dbns(namespace)
        for value in values:
            raw = None if value.unavailable else encode(value.data)
            out.append((value.seq, line(value.seq, dbns, field, raw, value.time, value.context)))
    out.sort()
    return [text for _, text in out]


def row_lines(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """Stored rows ``(seq, namespace, field, value, created_at, context)`` as lines."""
    return [
        line(seq, ns, f, None if raw is None else bytes(raw), t, ctx)
        for seq, ns, f, raw, t, ctx in sorted(rows, key=lambda row: row[0])
    ]


class Seen:
    """``on_change`` recorder: every call in order, and a bounded wait for a seq.

    ``on_change`` may be called from the store's background thread (others' writes
    arrive by themselves), so the record is guarded by a condition.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str, float]] = []  # (seq, dbns, field, arrived)
        self.high = 0
        self._cond = threading.Condition()

    def on_change(self, namespace: tuple[str, ...], field: str, value: Value) -> None:
        with self._cond:
            self.calls.append((value.seq, tuple2dbns(namespace), field, time.monotonic()))
            self.high = max(self.high, value.seq)
            self._cond.notify_all()

    def start_at(self, seq: int) -> None:
        """Entries up to ``seq`` were loaded at open (no ``on_change`` for them)."""
        with self._cond:
            self.high = max(self.high, seq)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait until an entry with this seq or a later one was reported."""
        with self._cond:
            return self._cond.wait_for(lambda: self.high >= seq, timeout=timeout)

    def seqs(self) -> list[int]:
        with self._cond:
            return [call[0] for call in self.calls]


class Point:
    """A value type only some writers' codecs know (a rolling deploy adding it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


#: the type id Point is registered under
POINT_TYPE_ID = 150


def points_codec() -> Codec:
    """A codec that knows :class:`Point`."""
    return codec_with(
        Point,
        POINT_TYPE_ID,
        lambda point: json.dumps([point.x, point.y]).encode(),
        lambda raw: Point(*json.loads(raw)),
    )


def open_store(
    location: dict[str, Any],
    seen: Seen | None = None,
    *,
    points: bool = False,
    **driver_kwargs: Any,
) -> Store:
    """A Store on ``location`` (a tests/crash/childlib location), replace fields ``r_*``;
    its codec knows :class:`Point` when ``points``."""
    store = Store(
        make_driver(location, **driver_kwargs),
        codec=points_codec() if points else None,
        on_change=None if seen is None else seen.on_change,
        replace_predicate=is_replace,
    )
    if seen is not None:
        seen.start_at(max((value.seq for value in all_values(store)), default=0))
    return store


def walk(
    tree: dict[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, Sequence[Value]]]:
    """``(namespace, field, values)`` for every field in a cache tree (any leaf that is
    not a dict is a field's sequence of Values, SPEC §12)."""
    for name, child in tree.items():
        if isinstance(child, dict):
            yield from walk(child, (*prefix, name))
        else:
            yield prefix, name, child


def all_values(store: Store) -> Iterable[Value]:
    for _, _, values in walk(store.cache):
        yield from values


def dumps(obj: Any) -> str:
    """One JSON line."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- parent side


class PeerProcess(ChildProcess):
    """tests/peers/peer.py running in its own process, driven command by command."""

    def __init__(
        self,
        location: dict[str, Any],
        stderr: Path,
        app: str = "appendmuch-shared-peer",
        **driver: Any,
    ) -> None:
        import queue

        self.app = app
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        cfg = {"location": location, "driver": driver}
        super().__init__(PEERS / "peer.py", cfg, stderr, stdin=True)
        self.ready_seq: int = self._reply()["ready"]

    def on_line(self, line: bytes) -> None:
        self._replies.put(json.loads(line))

    def on_eof(self) -> None:
        self._replies.put(None)

    def _reply(self) -> dict[str, Any]:
        import queue

        try:
            reply = self._replies.get(timeout=PATIENCE)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"peer did not answer in {PATIENCE} s:\n{self.stderr()}") from None
        if reply is None:
            self.proc.wait()
            raise AssertionError(f"peer ended (status {self.proc.returncode}):\n{self.stderr()}")
        return reply

    def send(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one command; the raw reply (``ok`` or ``error``)."""
        self.begin(op, **args)
        return self._reply()

    def __call__(self, op: str, **args: Any) -> Any:
        """Run one command that must succeed; its result."""
        reply = self.send(op, **args)
        if "error" in reply:
            raise AssertionError(f"peer {op} {args} failed:\n{reply['trace']}")
        return reply["ok"]

    def begin(self, op: str, **args: Any) -> None:
        """Start one command without waiting for it (several peers work at once)."""
        self.write_stdin(dumps({"op": op, **args}).encode())

    def end(self) -> Any:
        """The result of the command :meth:`begin` started (it must succeed)."""
        reply = self._reply()
        if "error" in reply:
            raise AssertionError(f"peer command failed:\n{reply['trace']}")
        return reply["ok"]

    def close(self) -> None:
        """Close the peer's Store and wait for it to exit cleanly."""
        if self.proc.returncode is None:
            self.begin("close")
            self._reply()
        self.reap()
        assert self.proc.returncode == 0, self.stderr()

    def kill(self) -> None:
        self.reap(kill=True, timeout=None)


class Peers:
    """Peer processes on one place, each with its own stderr file; ``kill()`` stops
    them all.  ``defaults`` are the driver keywords every peer starts with."""

    def __init__(self, place: SqlBackend, directory: Path, app: str, **defaults: Any) -> None:
        self.place = place
        self.directory = directory
        self.app = app
        self.defaults = defaults
        self.started: list[PeerProcess] = []

    def start(self, **driver: Any) -> PeerProcess:
        """Start one more peer (``driver`` over the defaults)."""
        number = len(self.started)
        app = f"{self.app}-{number}"
        peer = PeerProcess(
            self.place.location(app),
            self.directory / f"peer-{number}.stderr",
            app,
            **{**self.defaults, **driver},
        )
        self.started.append(peer)
        return peer

    def kill(self) -> None:
        for peer in self.started:
            peer.kill()

    def __enter__(self) -> Peers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class WorkerProcess(ChildProcess):
    """tests/peers/worker.py in its own process; its ``@`` markers read as they come."""

    stderr_tail = 4000

    def __init__(self, cfg: dict[str, Any], stderr: Path) -> None:
        self.cfg = cfg
        super().__init__(PEERS / "worker.py", cfg, stderr, stdin=True)

    def wait_marker(self, word: str) -> str:
        """Wait (bounded) for ``@word``; its rest of line.  Fails if the worker died."""
        seen = self.marker(word)
        if seen is not None:
            return seen[1]
        self.kill()
        raise AssertionError(
            f"worker {self.cfg.get('wid')} never printed @{word}:\n{self.stderr()}"
        )

    def release(self) -> None:
        """Tell a worker that printed ``@done`` that every writer is done."""
        self.write_stdin(b"go\n")

    def finish(self) -> None:
        self.wait_marker("reported")
        self.reap()
        assert self.proc.returncode == 0, self.stderr()

    def kill(self) -> None:
        self.reap(kill=True, timeout=None)


def read_acks(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an acks file (a line cut short by a kill is not one)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(part) for part in text.split("\n")[:-1] if part]
