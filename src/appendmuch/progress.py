"""A one-line progress bar for long commands, drawn only on a terminal.

>>> import io
>>> with Progress("dump", total=10, stream=io.StringIO()) as bar:  # not a terminal: silent
...     bar.update(5)
>>> bar.enabled
False
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 24


class Progress:
    """``label [#####-----]  42%  420/1,000 unit`` redrawn in place on ``stream``.

    Enabled only when ``stream`` (stderr by default) is a terminal, so piped or
    redirected output stays clean.  Redraws at most every ``interval`` seconds; the
    final state is drawn by :meth:`finish` (or leaving the ``with`` block), which ends
    the line.  With ``total=None`` only the count is shown.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total if total is None or total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        #: whether anything is drawn at all
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self._drawn_at = 0.0
        self._finished = False

    def update(self, done: int) -> None:
        """Note progress (``done`` out of ``total``); redraw if it is time."""
        self.done = done
        if self.enabled:
            now = time.monotonic()
            if now - self._drawn_at >= self.interval:
                self._drawn_at = now
                self._draw()

    def finish(self) -> None:
        """Draw the last state and end the line (once)."""
        if self.enabled and not self._finished:
            self._finished = True
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            line = f"{self.label}  {self.done:,}{unit}"
        else:
            fraction = min(max(self.done / self.total, 0.0), 1.0)
            filled = round(fraction * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            line = f"{self.label} [{bar}] {fraction:4.0%}  {self.done:,}/{self.total:,}{unit}"
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()
