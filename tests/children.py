"""The one wrapper of the tests' child processes (crash writers, shared-mode peers and
workers): a Python script started with one JSON argument, its stderr in a file, its
stdout read by a thread as it comes.  A line ``@word rest`` is a marker (when the child
reached a point); any other complete line goes to :meth:`ChildProcess.on_line`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

#: generous bound on any wait for a child (a failure, never a timing threshold)
PATIENCE = 60.0


class ChildProcess:
    """``python script 'cfg as JSON'``, run in the stderr file's folder (anything the
    child leaves behind stays in the test's tmp_path)."""

    #: how much of the end of stderr a failure message shows
    stderr_tail = 3000

    def __init__(self, script: Path, cfg: Any, stderr: Path, *, stdin: bool = False) -> None:
        self._stderr_path = stderr
        self._stderr: IO[bytes] = open(stderr, "wb")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(cfg)],
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=stderr.parent,
        )
        #: marker word -> (arrival time, rest of line) for each time it was printed
        self.markers: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith(b"\n"):
                break  # cut short by a kill: not a complete report
            if line.startswith(b"@"):
                word, _, rest = line[1:].decode().strip().partition(" ")
                with self._cond:
                    self.markers[word].append((time.monotonic(), rest))
                    self._cond.notify_all()
            else:
                self.on_line(line)
        with self._cond:
            self.eof = True
            self._cond.notify_all()
        self.on_eof()

    def on_line(self, line: bytes) -> None:
        """A complete stdout line that is not a marker (ignored unless overridden)."""

    def on_eof(self) -> None:
        """The child's stdout ended (nothing to do unless overridden)."""

    def marker(self, word: str, count: int = 1) -> tuple[float, str] | None:
        """Wait (bounded) for the ``count``-th ``@word``: (arrival time, rest of line),
        or None if the child's output ended, or PATIENCE passed, without it."""
        with self._cond:
            self._cond.wait_for(
                lambda: len(self.markers.get(word, ())) >= count or self.eof, timeout=PATIENCE
            )
            seen = self.markers.get(word, [])
            return seen[count - 1] if len(seen) >= count else None

    def write_stdin(self, text: bytes) -> None:
        """Write to the child's stdin (started with ``stdin=True``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")[-self.stderr_tail :]

    def reap(self, *, kill: bool = False, timeout: float | None = PATIENCE) -> None:
        """Wait for the child to end (SIGKILL it first when ``kill``), read everything
        it printed, and close its stderr file."""
        if kill and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=timeout)
        self._reader.join()
        if not self._stderr.closed:
            self._stderr.close()
