"""Crash-test child: opens one new log after another until it is killed.

Config (JSON in argv[1]): ``locations``: a template, ``{"kind": "sqlite", "path":
"/dir/log-{i}.sqlite3"}`` or ``{"kind": "postgresql", "conninfo": ..., "prefix":
"base_{i}"}``.  For i = 0, 1, ... it prints ``@opening i``, opens a Store on the new
location i (the first open creates the file or table), prints ``@opened i``, writes one
row, flushes, reports it (acknowledged), closes, prints ``@closed i``.
"""

from __future__ import annotations

import itertools

from childlib import Acks, config, make_driver, marker

from appendmuch import Store


def main() -> None:
    cfg = config()
    template = cfg["locations"]
    marker("ready")
    for i in itertools.count():
        location = {key: str(value).format(i=i) for key, value in template.items()}
        acks = Acks()
        marker("opening", i)
        store = Store(make_driver(location), on_change=acks.on_change)
        acks.store = store
        marker("opened", i)
        store.storage("o").i = i
        store.flush()
        acks.ack()
        store.close()
        marker("closed", i)


if __name__ == "__main__":
    main()
