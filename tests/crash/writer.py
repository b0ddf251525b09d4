"""Crash-test child: writes to a log until it is killed, reporting acknowledged writes.

Config (JSON in argv[1]):

- ``location``: where the log is (see :func:`childlib.make_driver`);
- ``seed``: seeds the operations;
- ``mode``: ``"write_through"`` (each assignment's return acknowledges it, the child
  reports right after it) or ``"batched"`` (``store.flush()`` returning acknowledges
  everything before it; the child flushes after every 1..``flush_every`` operations);
- ``burst`` (batched only, optional): ``[lo, hi]``; the child then writes lo..hi rows of
  strings (``text``: ``[shortest, longest]``, default 200..1200 characters), prints
  ``@flushing N FIRST LAST`` (the batch holds seqs FIRST+1..LAST), flushes, prints
  ``@flushed N``, reports, and again;
- ``driver``: extra driver keywords (``batch_size``, ``batch_interval``).

Operations: plain writes, deletes (tombstones), ``with``-block mutations of dicts and
lists (nested blocks too), replace-semantics fields (``r_*``: writes, mutations,
deletes), in a few namespaces of two and three tokens.
"""

from __future__ import annotations

import random
import string
from typing import Any

from childlib import Acks, config, is_replace, make_driver, marker

from appendmuch import Storage, Store

NAMESPACES = [("w", f"p{i}") for i in range(4)] + [("w", "p0", "sub")]
PLAIN = ("n", "s", "f")
#: slices of this give long strings cheaply
TEXT = "".join(random.Random(0).choices(string.ascii_letters + "éß€ ", k=1 << 16))


def text(rng: random.Random, i: int, lo: int, hi: int) -> str:
    start = rng.randrange(len(TEXT) - hi)
    return f"{i}:" + TEXT[start : start + rng.randint(lo, hi)]


def plain_value(rng: random.Random, field: str, i: int) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.1:
        return rng.random() < 0.5
    if field == "n":
        return rng.randint(-(10**12), 10**12)
    if field == "f":
        return rng.random() * 10 ** rng.randint(-5, 8)
    return text(rng, i, 0, 40)


def mutate_doc(s: Storage, rng: random.Random, i: int, field: str) -> None:
    """Inside a with block: mutate the dict in ``field`` in place (or start a new one)."""
    doc = s.get(field)
    if not isinstance(doc, dict) or len(doc["items"]) > 6:
        setattr(s, field, {"items": [i], "k": {}})
        if rng.random() < 0.5:  # mutating the assigned object writes again at exit
            getattr(s, field)["items"].append(-i)
    else:
        doc["items"].append(i)
        doc["k"][str(i % 4)] = rng.random()


def step(store: Store, rng: random.Random, i: int) -> None:
    """One operation on a random namespace."""
    s = store.storage(*rng.choice(NAMESPACES))
    roll = rng.random()
    if roll < 0.35:
        field = rng.choice(PLAIN)
        setattr(s, field, plain_value(rng, field, i))
    elif roll < 0.45:
        present = [field for field in s.__fields__() if field in PLAIN]
        if present:
            delattr(s, rng.choice(present))
        else:
            s.n = i
    elif roll < 0.62:
        with s:
            mutate_doc(s, rng, i, "doc")
            if rng.random() < 0.4:
                lst = s.get("lst")
                if isinstance(lst, list) and len(lst) < 8:
                    lst.append(i)
                else:
                    s.lst = [i]
            if rng.random() < 0.3:
                with store.storage(*s.__namespace__) as again:  # nested block, same namespace
                    again.doc["items"].append(i * 10)
    elif roll < 0.82:
        s.r_n = rng.randint(0, 10**6)
    elif roll < 0.92:
        with s:
            mutate_doc(s, rng, i, "r_doc")
    elif "r_n" in s.__fields__():
        del s.r_n
    else:
        s.r_s = text(rng, i, 0, 30)


def burst(
    store: Store, rng: random.Random, lo: int, hi: int, text_len: list[int], acks: Acks
) -> None:
    """Write lo..hi rows of strings (a few replace fields too), then flush them."""
    count = rng.randint(lo, hi)
    base = store.driver.last_seq
    for k in range(count):
        s = store.storage(*NAMESPACES[k % len(NAMESPACES)])
        if k % 50 == 0:
            s.r_n = base + k
        else:
            s.s = text(rng, base + k, *text_len)
    marker("flushing", count, base, store.driver.last_seq)  # the batch: seqs base+1..last
    store.flush()
    marker("flushed", count)  # flush() returned: the batch is committed
    acks.ack()


def main() -> None:
    cfg = config()
    rng = random.Random(cfg["seed"])
    write_through = cfg["mode"] == "write_through"
    acks = Acks()
    driver = make_driver(cfg["location"], write_through=write_through, **cfg.get("driver", {}))
    store = Store(driver, on_change=acks.on_change, replace_predicate=is_replace)
    acks.store = store
    marker("ready", driver.last_seq)
    if cfg.get("burst"):
        lo, hi = cfg["burst"]
        while True:
            burst(store, rng, lo, hi, cfg.get("text", [200, 1200]), acks)
    flush_every = cfg.get("flush_every", 10)
    due = rng.randint(1, flush_every)
    i = 0
    while True:
        i += 1
        step(store, rng, i)
        if write_through:
            acks.ack()
        elif i >= due:
            store.flush()
            acks.ack()
            due = i + rng.randint(1, flush_every)


if __name__ == "__main__":
    main()
