"""The ``module.function:lineno`` context string recorded with every write."""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

__all__ = ["caller_context"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: package modules that play the part of application code (their writes are named)
_APPLICATION_MODULES = frozenset({os.path.join(_PACKAGE_DIR, "demo.py")})
_ours: dict[str, bool] = {}
_labels: dict[tuple[CodeType, int], str] = {}


def _is_ours(filename: str) -> bool:
    ours = _ours.get(filename)
    if ours is None:
        path = os.path.abspath(filename)
        ours = path.startswith(_PACKAGE_DIR) and path not in _APPLICATION_MODULES
        _ours[filename] = ours
    return ours


def caller_context(depth: int = 2) -> str:
    """Name the first frame outside appendmuch, e.g. ``'__main__.<module>:14'``.

    ``depth`` is where to start looking (2 = the caller of the function calling
    this); frames inside the package are skipped, so any internal call path names
    the user code that caused the write.  Labels are interned: one str per line.
    """
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None and _is_ours(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return ""
    key = (frame.f_code, frame.f_lineno)
    label = _labels.get(key)
    if label is None:
        module = frame.f_globals.get("__name__", "?")
        label = sys.intern(f"{module}.{frame.f_code.co_name}:{frame.f_lineno}")
        if len(_labels) > 100_000:
            _labels.clear()
        _labels[key] = label
    return label
