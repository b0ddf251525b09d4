"""A writer that forks while its Store is open (tests/test_fork.py).

``python tests/crash/forker.py LOCATION_JSON``.  The parent writes ``a=1`` (flushed) and
``b=2`` (still queued), then forks.  The child tries to write ``c=3`` and to flush
through the inherited Store, prints what happened as one JSON line, and exits normally
(so the Store's finalizer and the at-exit hooks run in the child).  The parent, after
the child has exited, notes whether its lock file is still there, writes ``d=4``,
flushes, closes, and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from childlib import make_driver

from appendmuch import Store
from appendmuch.errors import WriteError

location = json.loads(sys.argv[1])
store = Store(make_driver(location, batch_interval=3600.0))
s = store.storage("f")
s.a = 1
store.flush()
s.b = 2
pid = os.fork()
if pid == 0:
    report: dict[str, str] = {"who": "child"}
    for what, action in (("write", lambda: setattr(s, "c", 3)), ("flush", store.flush)):
        try:
            action()
            report[what] = "done"
        except WriteError as exc:
            report[what] = f"refused: {exc}"
    print(json.dumps(report), flush=True)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
lock = location.get("lock")
report = {"who": "parent", "child_status": str(status)}
report["lock_kept"] = str(lock is None or os.path.exists(lock))
s.d = 4
store.flush()
store.close()
print(json.dumps(report), flush=True)
