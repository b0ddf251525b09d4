"""FifoLock (drivers/fifolock.py, the SQLite lease) beside a plain ``flock``.

    python benchmarks/fifolock.py
    python benchmarks/fifolock.py --rounds 5 --samples 1000

Measured on files in a temporary directory, for ``fifo`` (FifoLock) and ``flock`` (a
blocking ``LOCK_EX`` and ``LOCK_UN`` on one file, the kernel's lock, which wakes its
waiters in no fixed order):

- uncontended acquire + release in one process, microseconds per pair (median of rounds);
- hand-over: two processes each loop acquire / hold 1 ms / release / acquire again at
  once.  On each grant the new holder reads the time the other wrote just before
  releasing (CLOCK_MONOTONIC: one clock for the machine): p50/p99 of release -> grant;
  and the share of grants that went back to the process that had just released although
  the other was waiting (had asked, for FifoLock: was in line, before that release);
- fairness: 3 processes loop acquire / hold 1 ms / release, a 4th asks every 10 ms and
  holds 1 ms: the 4th's waits, p50/p99/max.

Processes are real (multiprocessing, spawn); times are wall clock on this machine.
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from appendmuch.drivers.fifolock import FifoLock  # noqa: E402


class Lock(Protocol):
    def acquire(self, *, timeout: float = ..., on_queued: Callable[[], object] = ...) -> None: ...

    def release(self) -> None: ...


class Flock:
    """A plain kernel lock: a blocking ``LOCK_EX`` (no timeout) and ``LOCK_UN``."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a+b")  # noqa: SIM115

    def acquire(self, *, timeout: float = 10.0, on_queued: Callable[[], object] = int) -> None:
        on_queued()  # (no line to be in: asking is all)
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)


def make(kind: str, path: str) -> Lock:
    return FifoLock(path) if kind == "fifo" else Flock(path)


def uncontended(kind: str, path: str, n: int) -> float:
    lock = make(kind, path)
    for _ in range(100):
        lock.acquire()
        lock.release()
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n


#: the shared stamp file: the last release's time and releaser (0/1), then at 16 + 8 * i
#: the time process i asked, 0 once granted
RELEASE = struct.Struct("di")


def pingpong(kind: str, path: str, stamp: str, me: int, n: int, barrier: Any, out: Any) -> None:
    lock, fd = make(kind, path), os.open(stamp, os.O_RDWR)
    latencies, barged = [], 0

    def asked() -> None:
        os.pwrite(fd, struct.pack("d", time.perf_counter()), 16 + 8 * me)

    barrier.wait()
    for _ in range(n):
        lock.acquire(timeout=60.0, on_queued=asked)
        now = time.perf_counter()
        released, by = RELEASE.unpack(os.pread(fd, RELEASE.size, 0))
        (other_asked,) = struct.unpack("d", os.pread(fd, 8, 16 + 8 * (1 - me)))
        os.pwrite(fd, bytes(8), 16 + 8 * me)  # (granted: no longer asking)
        if by == me and 0 < other_asked < released:
            barged += 1
        elif by == 1 - me:
            latencies.append(now - released)
        time.sleep(0.001)
        os.pwrite(fd, RELEASE.pack(time.perf_counter(), me), 0)
        lock.release()
    out.put((latencies, barged))


def busy(kind: str, path: str, stop: Any) -> None:
    lock = make(kind, path)
    while not stop.is_set():
        lock.acquire(timeout=60.0)
        time.sleep(0.001)
        lock.release()


def occasional(kind: str, path: str, n: int, out: Any) -> None:
    lock, waits = make(kind, path), []
    for _ in range(n):
        time.sleep(0.01)
        start = time.perf_counter()
        lock.acquire(timeout=60.0)
        waits.append(time.perf_counter() - start)
        time.sleep(0.001)
        lock.release()
    out.put(waits)


def quantiles(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "-"
    p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {p50 * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms  max {values[-1] * 1e3:7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500, help="grants per measurement")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        print("uncontended acquire + release (us per pair, median of rounds):")
        for kind in ("fifo", "flock"):
            path = os.path.join(tmp, f"{kind}-solo.lease")
            costs = [uncontended(kind, path, 20 * args.samples) for _ in range(args.rounds)]
            print(f"  {kind:5}  {statistics.median(costs) * 1e6:7.1f}")

        print("hand-over between 2 processes (release -> the other granted):")
        for kind in ("fifo", "flock"):
            latencies: list[float] = []
            barged = grants = 0
            for round_ in range(args.rounds):
                path, stamp = os.path.join(tmp, f"{kind}-{round_}.lease"), f"{tmp}/stamp"
                Path(stamp).write_bytes(RELEASE.pack(0.0, -1).ljust(32, b"\0"))
                barrier, out = ctx.Barrier(2), ctx.Queue()
                procs = [
                    ctx.Process(
                        target=pingpong, args=(kind, path, stamp, i, args.samples, barrier, out)
                    )
                    for i in range(2)
                ]
                for proc in procs:
                    proc.start()
                for _ in procs:
                    got, back = out.get()
                    latencies += got
                    barged += back
                    grants += args.samples
                for proc in procs:
                    proc.join()
            print(
                f"  {kind:5}  {quantiles(latencies)}  retaken by the releaser while the other "
                f"waited: {100 * barged / grants:4.1f}% of grants"
            )

        print("an occasional requester (every 10 ms) beside 3 busy ones (hold 1 ms):")
        for kind in ("fifo", "flock"):
            waits: list[float] = []
            for round_ in range(args.rounds):
                path = os.path.join(tmp, f"{kind}-fair-{round_}.lease")
                stop, out = ctx.Event(), ctx.Queue()
                procs = [ctx.Process(target=busy, args=(kind, path, stop)) for _ in range(3)]
                for proc in procs:
                    proc.start()
                one = ctx.Process(target=occasional, args=(kind, path, args.samples // 2, out))
                one.start()
                waits += out.get()
                one.join()
                stop.set()
                for proc in procs:
                    proc.join()
            print(f"  {kind:5}  {quantiles(waits)}  ({len(waits)} waits)")


if __name__ == "__main__":
    main()
