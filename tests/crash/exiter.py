"""Durability-test child: writes, then ends the interpreter without calling close().

Config (JSON in argv[1]): ``location``; ``driver`` (extra driver keywords); ``count``
(operations); ``end``, how the process ends:

- ``"normal"``: falls off the end of the script;
- ``"raise"``: an uncaught exception (exit status 1);
- ``"exit3"``: ``sys.exit(3)``;
- ``"local"``: the Store lived in a function that returned (it is garbage now);
- ``"cycle"``: the only references to the Store are in a reference cycle;
- ``"after_close"``: ``store.close()``, then more writes (a write refused with an
  exception prints ``@refused``), then a normal end.

Every entry appended is printed as a JSON line (not an acknowledgement: the parent
checks that even unflushed entries survive the exit).
"""

from __future__ import annotations

import sys
from typing import Any

from childlib import Acks, config, is_replace, make_driver, marker

from appendmuch import Store


def write(store: Store, count: int, offset: int = 0) -> None:
    """``count`` operations of every kind: plain writes, deletes, with blocks, replace."""
    for k in range(offset, offset + count):
        s = store.storage("exit", f"p{k % 3}")
        s.n = k
        s.s = f"row {k} é"
        if k % 4 == 1:
            del s.n
        if k % 5 == 2:
            with s:
                doc = s.get("doc")
                if doc is None:
                    s.doc = {"items": []}
                else:
                    doc["items"].append(k)
        s.r_n = k * 7
        if k % 6 == 3:
            del s.r_n


def open_store(cfg: dict[str, Any], acks: Acks) -> Store:
    driver = make_driver(cfg["location"], **cfg.get("driver", {}))
    store = Store(driver, on_change=acks.on_change, replace_predicate=is_replace)
    acks.store = store
    return store


def in_a_function(cfg: dict[str, Any], acks: Acks) -> None:
    store = open_store(cfg, acks)
    write(store, cfg["count"])


def main() -> None:
    cfg = config()
    end = cfg["end"]
    acks = Acks()
    if end == "local":
        in_a_function(cfg, acks)
        acks.ack()
        return
    store = open_store(cfg, acks)
    write(store, cfg["count"])
    if end == "after_close":
        store.close()
        acks.ack()
        try:
            write(store, cfg["count"], offset=cfg["count"])
        except Exception as exc:  # refused: what was accepted before must still survive
            marker("refused", type(exc).__name__)
        acks.ack()
        return
    acks.ack()  # printed, not committed: the writes may all still be queued
    if end == "raise":
        raise RuntimeError("uncaught on purpose")
    if end == "exit3":
        sys.exit(3)
    if end == "cycle":
        cycle: dict[str, Any] = {"store": store}
        cycle["self"] = cycle
        del cycle, store


if __name__ == "__main__":
    main()
