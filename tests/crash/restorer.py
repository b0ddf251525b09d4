"""Crash-test child: restores a big dump into a log, between two markers.

Config (JSON in argv[1]): ``location``, ``dump`` (path of the dump file).  Prints
``@ready`` once the driver is open, ``@restoring`` just before ``driver.restore(...)``,
``@restored N`` after it returned, and ``@closed`` after closing the driver; then waits
to be killed (with ``exit`` in the config: exits instead).
"""

from __future__ import annotations

import signal

from childlib import config, make_driver, marker


def main() -> None:
    cfg = config()
    driver = make_driver(cfg["location"])
    driver.ensure()
    marker("ready", driver.last_seq)
    with open(cfg["dump"], "rb") as dump:
        marker("restoring")
        count = driver.restore(dump)
    marker("restored", count)
    driver.close()
    marker("closed")
    if not cfg.get("exit"):
        signal.pause()  # a kill that comes late still finds the process


if __name__ == "__main__":
    main()
