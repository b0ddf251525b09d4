"""A second writer the parent test drives, one JSON command per stdin line.

Started as ``python tests/peers/peer.py CONFIG_JSON`` with ``location`` (see
tests/crash/childlib.py ``make_driver``) and optional ``driver`` keywords (``shared``,
``write_through``, ...).  It opens a Store (replace fields ``r_*``), prints
``{"ready": high_seq}``, then answers each command line with one JSON line:
``{"ok": result}`` or ``{"error": "ExceptionType", "message": ...}``.

Commands (``ns`` is a list of tokens):

- ``set ns field value`` / ``del ns field``: a plain assignment / deletion;
- ``point ns field x y``: assign a ``Point`` (started with ``points``: its codec
  knows that type, tests/sharedlib.py);
- ``append ns field item``: ``with s:`` append ``item`` to the list in ``field``;
- ``incr ns field [retry]``: ``with s:`` add 1 to ``field["n"]`` (a dict counter),
  wrapped in ``retry_on_conflict`` when ``retry``; the result is the attempts made;
- ``sync`` / ``flush``; ``wait seq timeout``: wait, without calling ``sync()``, until
  ``on_change`` has reported ``seq`` (result: whether it did, and how long it took);
- ``history``: the cache as lines (tests/sharedlib.py ``history_lines``);
- ``seen``: the seqs ``on_change`` reported, in call order;
- ``hold ns field item`` then ``release``: open a ``with`` block, append ``item``
  to the list in ``field`` and keep the block open until ``release`` exits it
  (result: the exception it raised, if any);
- ``bump ns pattern times``: ``times`` increments of a ``tests/patterns.py`` pattern,
  each retried until it commits (result: the conflicts met);
- ``triple ns times``: ``times`` blocks each assigning fields ``a``, ``b``, ``c`` the
  block's number (kept together: result None);
- ``spam ns times``: ``times`` plain assignments of field ``x``;
- ``close``: close the Store and exit.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json

import appendmuch
from appendmuch import Storage, Store
from appendmuch.errors import AppendmuchError, WriteError
from patterns import bump
from sharedlib import Point, Seen, dumps, history_lines, open_store


def do_append(s: Storage, field: str, item: Any) -> None:
    with s:
        current = s.get(field)
        if isinstance(current, list):
            current.append(item)
        else:
            setattr(s, field, [item])


def do_incr(s: Storage, field: str, retry: bool) -> int:
    attempts = 0

    def bump() -> None:
        nonlocal attempts
        attempts += 1
        with s:
            counter = s.get(field)
            if isinstance(counter, dict):
                counter["n"] += 1
            else:
                setattr(s, field, {"n": 1})

    if retry:
        appendmuch.retry_on_conflict(attempts=1000)(bump)()
    else:
        bump()
    return attempts


class Peer:
    def __init__(self, store: Store, seen: Seen) -> None:
        self.store = store
        self.seen = seen
        self.held = ExitStack()

    def run(self, cmd: dict[str, Any]) -> Any:
        op = cmd["op"]
        store = self.store
        s = store.storage(*cmd["ns"]) if "ns" in cmd else None
        if op == "set":
            assert s is not None
            setattr(s, cmd["field"], cmd["value"])
            return None
        if op == "point":
            assert s is not None
            setattr(s, cmd["field"], Point(cmd["x"], cmd["y"]))
            return None
        if op == "del":
            assert s is not None
            delattr(s, cmd["field"])
            return None
        if op == "append":
            assert s is not None
            do_append(s, cmd["field"], cmd["item"])
            return None
        if op == "incr":
            assert s is not None
            return do_incr(s, cmd["field"], cmd.get("retry", False))
        if op == "bump":
            assert s is not None
            return bump(s, cmd["pattern"], cmd["times"])
        if op == "triple":
            assert s is not None
            for k in range(cmd["times"]):
                with s:
                    s.a = s.b = s.c = f"{cmd['tag']}:{k}"
            return None
        if op == "spam":
            assert s is not None
            outages = cmd.get("through_outages", False)
            for k in range(cmd["times"]):
                try:
                    s.x = k
                except WriteError:
                    # the backlog's flush met the server gone: the row is queued and
                    # the next successful round writes it
                    if not outages:
                        raise
            return None
        if op == "sync":
            store.sync()
            return self.seen.high
        if op == "flush":
            store.flush()
            return None
        if op == "wait":
            start = time.monotonic()
            arrived = self.seen.wait_for(cmd["seq"], cmd["timeout"])
            return {"arrived": arrived, "waited": time.monotonic() - start}
        if op == "history":
            return history_lines(store)
        if op == "seen":
            return self.seen.seqs()
        if op == "hold":
            assert s is not None
            self.held.enter_context(s)
            s.get(cmd["field"]).append(cmd["item"])
            return None
        if op == "release":
            try:
                self.held.close()
            except AppendmuchError as exc:
                return type(exc).__name__
            return None
        raise ValueError(f"unknown command {op!r}")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    seen = Seen()
    driver = dict(cfg.get("driver", {}))
    points = bool(driver.pop("points", False))
    store = open_store(cfg["location"], seen, points=points, **driver)
    sys.stdout.write(dumps({"ready": seen.high}))
    sys.stdout.flush()
    peer = Peer(store, seen)
    for text in sys.stdin:
        cmd = json.loads(text)
        if cmd["op"] == "close":
            break
        try:
            reply = {"ok": peer.run(cmd)}
        except Exception as exc:  # reported to the parent, which decides
            reply = {
                "error": type(exc).__name__,
                "message": str(exc),
                "trace": traceback.format_exc(),
            }
        sys.stdout.write(dumps(reply))
        sys.stdout.flush()
    store.close()
    sys.stdout.write(dumps({"ok": "closed"}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
