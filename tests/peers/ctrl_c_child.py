"""A notebook hammered with Ctrl-C: real signals while a loop writes, in a process of
its own, so that everything it prints to stderr is seen.

``python tests/peers/ctrl_c_child.py LOCATION_JSON SEED SECONDS [shared]``: assignments
(a ``with`` block every 50, ``flush()`` every 1,000) while SIGALRM fires every 0.1 to 3
ms and raises KeyboardInterrupt whenever the loop is inside a call into the library;
the loop catches it and goes on.  Then another thread flushes and closes the Store.
Prints one JSON line: what was acknowledged, the errors met, how the end went.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crash"))

from childlib import make_driver

from appendmuch import Store


def main() -> None:
    location = json.loads(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    seconds = float(sys.argv[3])
    shared = len(sys.argv) > 4 and sys.argv[4] == "shared"
    armed = [False]
    landed = [0]

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-4, 3e-3))
        if armed[0]:
            armed[0] = False
            landed[0] += 1
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, handler)
    store = Store(make_driver(location, shared=shared))
    p = store.storage("w", "p")
    acked: list[int] = []
    errors: dict[str, int] = {}
    i = 0
    end = time.monotonic() + seconds
    signal.setitimer(signal.ITIMER_REAL, 1e-3)
    while time.monotonic() < end:
        i += 1
        try:
            armed[0] = True
            if i % 50 == 0:
                with p:
                    p.x = i
            else:
                p.x = i
            armed[0] = False
            acked.append(i)
            if i % 1000 == 0:
                armed[0] = True
                store.flush()
                armed[0] = False
        except KeyboardInterrupt:
            armed[0] = False
        except Exception as exc:  # counted, reported to the parent
            armed[0] = False
            key = f"{type(exc).__name__}: {str(exc)[:200]}"
            errors[key] = errors.get(key, 0) + 1
        finally:
            armed[0] = False
    signal.setitimer(signal.ITIMER_REAL, 0)
    ending: dict[str, Any] = {}

    def finish() -> None:
        for step in ("flush", "close"):
            try:
                getattr(store, step)()
                ending[step] = "ok"
            except Exception as exc:  # reported to the parent
                ending[step] = repr(exc)[:300]

    other = threading.Thread(target=finish, daemon=True)
    other.start()
    other.join(60)
    ending["hung"] = other.is_alive()
    report = {
        "operations": i,
        "interrupts": landed[0],
        "acked": acked,
        "errors": errors,
        "ending": ending,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
