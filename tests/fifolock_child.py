"""Child processes for tests/test_fifolock.py and benchmarks/fifolock.py.

``python fifolock_child.py MODE LOCKPATH ...``:

``serve``
    Obeys commands, one per line on stdin, and reports on stdout (one line per event):
    ``acquire NAME TIMEOUT`` (prints ``queued NAME`` once in line, then ``granted NAME``,
    ``timeout NAME``, ``cancelled NAME`` or ``interrupted NAME`` for KeyboardInterrupt),
    ``grab NAME LOG`` (acquire, append NAME to LOG while holding, release: ``queued``,
    then ``done NAME``), ``regrab NAME LOG`` (release what it holds, then ``grab``),
    ``log NAME LOG``, ``release``, ``held`` (``held True|False``).  ``cancel`` (sets the
    acquire's Cancel) and ``close`` (FifoLock.close) are obeyed at once, by the thread
    reading stdin, while the main thread may be waiting.
``ledger LEDGER OWNLOG HOLD_MS [COUNT [TIMEOUT_MS]]``
    Loops: acquire, read the ledger's last number n, yield, append ``n+1 PID``, hold,
    release, append the number of rounds completed to OWNLOG; COUNT rounds (0: until the
    file ``LEDGER.stop`` exists).  Under exclusion line i of the ledger says i.  With
    TIMEOUT_MS each acquire times out after a random 0-TIMEOUT_MS ms and is retried.
``busy HOLD_MS``
    Acquire, hold, release, until ``LOCKPATH.stop`` exists (a tight-loop writer).
``occasional EVERY_MS COUNT OUT``
    Every EVERY_MS asks for the lock, holds it ~1 ms; writes the COUNT waits (seconds,
    one per line) to OUT.

The module under test is stdlib-only and is loaded here from the appendmuch package
that is first on the path (``find_spec`` locates it without importing it) without
importing the package itself, so that a child starts in ~20 ms instead of ~150 ms.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import random
import sys
import threading
import time
from pathlib import Path
from types import ModuleType


def load_fifolock() -> ModuleType:
    package = importlib.util.find_spec("appendmuch")
    assert package is not None and package.origin is not None
    path = Path(package.origin).parent / "drivers" / "fifolock.py"
    spec = importlib.util.spec_from_file_location("fifolock_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fifolock = load_fifolock()


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def serve(lock_path: str) -> None:
    lock = fifolock.FifoLock(lock_path)
    cancel = fifolock.Cancel()
    commands: queue.Queue[list[str]] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            words = line.split()
            if words == ["cancel"]:
                cancel.set()
            elif words == ["close"]:
                lock.close()
            elif words:
                commands.put(words)
        commands.put(["quit"])

    threading.Thread(target=read, daemon=True).start()

    def acquire(name: str, timeout: float | None) -> bool:
        nonlocal cancel
        cancel = fifolock.Cancel()  # (a fresh one per request: a Cancel stays set)
        try:
            lock.acquire(timeout=timeout, cancel=cancel, on_queued=lambda: say("queued", name))
        except TimeoutError:
            say("timeout", name, lock.held)
        except InterruptedError:
            say("cancelled", name, lock.held)
        except KeyboardInterrupt:
            say("interrupted", name, lock.held)
        else:
            return True
        return False

    while True:
        command, *args = commands.get()
        if command == "quit":
            return
        if command == "acquire":
            name, timeout = args[0], None if args[1] == "none" else float(args[1])
            if acquire(name, timeout):
                say("granted", name)
        elif command in ("grab", "regrab"):
            if command == "regrab":
                lock.release()
            if acquire(args[0], 30.0):
                append(args[1], args[0] + "\n")
                lock.release()
                say("done", args[0])
        elif command == "log":
            append(args[1], args[0] + "\n")
            say("logged", args[0])
        elif command == "release":
            lock.release()
            say("released")
        elif command == "held":
            say("held", lock.held)
        else:
            raise SystemExit(f"unknown command {command!r}")


def last_number(path: str) -> int:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return 0
    lines = data.splitlines()
    return int(lines[-1].split()[0]) if lines else 0


def ledger(
    lock_path: str, ledger: str, own_log: str, hold_ms: str, count: str = "0", timeout_ms: str = "0"
) -> None:
    lock = fifolock.FifoLock(lock_path)
    hold, rounds, done = float(hold_ms) / 1000, int(count), 0
    longest = float(timeout_ms) / 1000
    while (rounds and done < rounds) or (not rounds and not os.path.exists(ledger + ".stop")):
        try:
            lock.acquire(timeout=random.uniform(0, longest) if longest else 60.0)
        except TimeoutError:
            assert not lock.held
            continue
        n = last_number(ledger)
        time.sleep(0)  # (lets another process run here, were exclusion broken)
        append(ledger, f"{n + 1} {os.getpid()}\n")
        if hold:
            time.sleep(hold)
        lock.release()
        done += 1
        append(own_log, f"{done}\n")


def busy(lock_path: str, hold_ms: str) -> None:
    lock = fifolock.FifoLock(lock_path)
    hold = float(hold_ms) / 1000
    while not os.path.exists(lock_path + ".stop"):
        lock.acquire(timeout=60.0)
        time.sleep(hold)
        lock.release()


def occasional(lock_path: str, every_ms: str, count: str, out: str) -> None:
    lock = fifolock.FifoLock(lock_path)
    waits = []
    for _ in range(int(count)):
        time.sleep(float(every_ms) / 1000)
        start = time.perf_counter()
        lock.acquire(timeout=60.0)
        waits.append(time.perf_counter() - start)
        time.sleep(0.001)
        lock.release()
    Path(out).write_text("".join(f"{wait!r}\n" for wait in waits))


if __name__ == "__main__":
    mode, *argv = sys.argv[1:]
    {"serve": serve, "ledger": ledger, "busy": busy, "occasional": occasional}[mode](*argv)
